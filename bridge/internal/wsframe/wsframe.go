// Package wsframe owns a websocket after gorilla/websocket's handshake:
// every frame of the socket, both ways (data, pings, pongs, closes), goes
// through one Conn, so that one write path with one deadline policy exists
// per socket and every protocol error closes with the right code.
//
// Why not a library for the frames: gorilla (used for the handshakes)
// allocates a reader or writer per message and writes each message with a
// system call of its own; the bridge needs a reader that reuses its buffers
// and writers that put a media message and its mark (or a backlog) into one
// write. github.com/gobwas/ws (v1.4.0) comes closest, but its ws.ReadHeader
// allocates on every frame (measured: 1 allocation per header), which the
// 50-frames-a-second-per-call read path must not do. RFC 6455 framing
// without extensions is small; the conformance tests of this package hold
// it to the RFC.
package wsframe

import (
	"encoding/binary"
)

// Opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa

	finBit  = 0x80
	rsvBits = 0x70
	maskBit = 0x80

	maxControlPayload = 125
)

// AppendText appends one unfragmented text frame carrying p, unmasked (a
// server's frame), to dst.
func AppendText(dst, p []byte) []byte {
	return append(appendHeader(dst, len(p), 0), p...)
}

// AppendMaskedText appends one unfragmented text frame carrying p masked
// with key (a client's frame) to dst.
func AppendMaskedText(dst, p []byte, key uint32) []byte {
	dst = appendHeader(dst, len(p), maskBit)
	dst = binary.BigEndian.AppendUint32(dst, key)
	n := len(dst)
	dst = append(dst, p...)
	mask(dst[n:], key)
	return dst
}

func appendHeader(dst []byte, n int, m byte) []byte {
	return appendOpHeader(dst, opText, n, m)
}

func appendOpHeader(dst []byte, op byte, n int, m byte) []byte {
	dst = append(dst, finBit|op)
	switch {
	case n <= 125:
		return append(dst, m|byte(n))
	case n < 1<<16:
		return append(dst, m|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, m|127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// mask XORs b with the 4-byte key (big-endian on the wire), eight bytes at
// a time.
func mask(b []byte, key uint32) {
	var k [4]byte
	binary.BigEndian.PutUint32(k[:], key)
	k8 := uint64(binary.LittleEndian.Uint32(k[:]))
	k8 |= k8 << 32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k8)
	}
	for ; i < len(b); i++ {
		b[i] ^= k[i&3]
	}
}
