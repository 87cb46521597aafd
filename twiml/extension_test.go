package twiml

import (
	"errors"
	"strings"
	"testing"
)

func TestParseExtension(t *testing.T) {
	tests := map[string]struct {
		to      string
		want    string
		wantErr string // substring of the error; empty means success
	}{
		"plain sip":                 {to: "sip:1001@vivi.sip.twilio.com", want: "1001"},
		"transport param":           {to: "sip:1001@vivi.sip.twilio.com;transport=tls", want: "1001"},
		"sips":                      {to: "sips:1001@vivi.sip.twilio.com", want: "1001"},
		"scheme upper case":         {to: "SIP:1001@x", want: "1001"},
		"sips mixed case":           {to: "SiPs:42@x", want: "42"},
		"angle brackets":            {to: "<sip:1001@x;transport=tls>", want: "1001"},
		"quoted display name":       {to: `"Front" <sip:1001@x;transport=tls>`, want: "1001"},
		"quoted name with < and \"": {to: `"Fr\"o<nt" <sip:1001@x>`, want: "1001"},
		"token display name":        {to: "Front Desk <sip:1001@x>", want: "1001"},
		"header params after >":     {to: "<sip:1001@x>;tag=abc", want: "1001"},
		"user and password":         {to: "sip:1001:secret@x", want: "1001"},
		"user=phone":                {to: "sip:5551234@x;user=phone", want: "5551234"},
		"header parameters":         {to: "sip:1001@x?X-Foo=1&Y=a@b", want: "1001"},
		"port on host":              {to: "sip:1001@x.example.com:5061;transport=tls", want: "1001"},
		"percent-encoded digits":    {to: "sip:%31%30%30%31@x", want: "1001"},
		"user params":               {to: "sip:1001;phone-context=pbx@x", want: "1001"},
		"surrounding spaces":        {to: "  sip:7@x  ", want: "7"},
		"twenty digits":             {to: "sip:" + strings.Repeat("9", 20) + "@x", want: strings.Repeat("9", 20)},
		"leading zeros kept":        {to: "sip:0012@x", want: "0012"},

		"empty":                  {to: "", wantErr: "empty"},
		"blank":                  {to: "   ", wantErr: "empty"},
		"tel URI":                {to: "tel:+15551234", wantErr: "not a sip"},
		"http URI":               {to: "https://1001@x", wantErr: "not a sip"},
		"no scheme":              {to: "1001@x", wantErr: "not a sip"},
		"no @":                   {to: "sip:vivi.sip.twilio.com", wantErr: "missing @"},
		"empty user":             {to: "sip:@host", wantErr: "empty user part"},
		"empty host":             {to: "sip:1001@", wantErr: "empty host"},
		"empty host with params": {to: "sip:1001@;transport=tls", wantErr: "empty host"},
		"letters":                {to: "sip:alice@x", wantErr: "not numeric"},
		"digits and letters":     {to: "sip:10a1@x", wantErr: "not numeric"},
		"leading plus":           {to: "sip:+14155550100@x;user=phone", wantErr: "leading +"},
		"encoded plus":           {to: "sip:%2B1001@x", wantErr: "leading +"},
		"twenty-one digits":      {to: "sip:" + strings.Repeat("1", 21) + "@x", wantErr: "longer than 20"},
		"arabic-indic digits":    {to: "sip:١٠٠١@x", wantErr: "not numeric"},
		"fullwidth digits":       {to: "sip:１００１@x", wantErr: "not numeric"},
		"encoded unicode digit":  {to: "sip:%D9%A1@x", wantErr: "not numeric"},
		"bad percent-encoding":   {to: "sip:10%G1@x", wantErr: "percent-encoding"},
		"truncated escape":       {to: "sip:100%3@x", wantErr: "percent-encoding"},
		"encoded @ is not a cut": {to: "sip:1001%40evil@x", wantErr: "not numeric"},
		"space in user":          {to: "sip:10 01@x", wantErr: "stray"},
		"unterminated <":         {to: "<sip:1001@x", wantErr: "unterminated <URI>"},
		"unterminated quote":     {to: `"Front <sip:1001@x>`, wantErr: "unterminated quoted"},
		"quoted name, no <>":     {to: `"Front" sip:1001@x`, wantErr: "without <URI>"},
		"text after >":           {to: "<sip:1001@x> trailing", wantErr: "text after"},
		"stray >":                {to: "sip:1001@x>", wantErr: "stray"},
		"password only":          {to: "sip::pw@x", wantErr: "empty user part"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseExtension(tc.to)
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseExtension(%q) = %q, %v; want %q", tc.to, got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseExtension(%q) = %q, want an error containing %q", tc.to, got, tc.wantErr)
			}
			if !errors.Is(err, ErrBadTo) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseExtension(%q) error = %v; want ErrBadTo containing %q", tc.to, err, tc.wantErr)
			}
			if got != "" {
				t.Fatalf("ParseExtension(%q) returned %q with an error", tc.to, got)
			}
		})
	}
}

func FuzzParseExtension(f *testing.F) {
	for _, s := range []string{
		"sip:1001@vivi.sip.twilio.com;transport=tls", `"Front" <sip:1001@x;transport=tls>`,
		"sips:1:pw@x:5061?X-Foo=1", "sip:%31@x", "sip:+1@x", "tel:1", "sip:@x", "<sip:1@x>;tag=1",
		"sip:1;a=b@x", `"\"<" <sip:2@x>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, to string) {
		ext, err := ParseExtension(to)
		if err != nil {
			if !errors.Is(err, ErrBadTo) || ext != "" {
				t.Fatalf("ParseExtension(%q) = %q, %v: errors must wrap ErrBadTo and return no extension", to, ext, err)
			}
			return
		}
		if len(ext) < 1 || len(ext) > MaxExtensionDigits {
			t.Fatalf("ParseExtension(%q) = %q: length %d", to, ext, len(ext))
		}
		for i := 0; i < len(ext); i++ {
			if ext[i] < '0' || ext[i] > '9' {
				t.Fatalf("ParseExtension(%q) = %q: not ASCII digits", to, ext)
			}
		}
		again, err := ParseExtension("sip:" + ext + "@h")
		if err != nil || again != ext {
			t.Fatalf("re-wrapped %q parsed as %q, %v", ext, again, err)
		}
	})
}
