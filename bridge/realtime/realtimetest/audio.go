package realtimetest

// Pattern returns n μ-law bytes whose i-th byte is i mod 256: the default
// greeting and reply audio, easy to recognise (and to check the order of)
// wherever it arrives.
func Pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// Tone returns n μ-law bytes of a 400 Hz square wave at about -12 dBFS:
// audio that the simulated VAD hears as speech.
func Tone(n int) []byte {
	hi, lo := linearToULaw(8000), linearToULaw(-8000)
	b := make([]byte, n)
	for i := range b {
		if i%20 < 10 { // 8000 Hz / 400 Hz = 20 samples per period
			b[i] = hi
		} else {
			b[i] = lo
		}
	}
	return b
}

// Silence returns n μ-law bytes of digital silence (0xFF).
func Silence(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 0xFF
	}
	return b
}

// ulawToLinear decodes one G.711 μ-law sample to 16-bit linear PCM.
func ulawToLinear(u byte) int {
	u = ^u
	exponent := int(u>>4) & 0x07
	sample := ((int(u&0x0F) << 3) + 0x84) << exponent
	sample -= 0x84
	if u&0x80 != 0 {
		return -sample
	}
	return sample
}

// linearToULaw encodes one 16-bit linear PCM sample as G.711 μ-law.
func linearToULaw(s int) byte {
	const bias, clip = 0x84, 32635
	sign := 0
	if s < 0 {
		s, sign = -s, 0x80
	}
	s = min(s, clip) + bias
	exponent := 7
	for mask := 0x4000; s&mask == 0 && exponent > 0; mask >>= 1 {
		exponent--
	}
	mantissa := (s >> (exponent + 3)) & 0x0F
	return ^byte(sign | exponent<<4 | mantissa)
}
