package channel

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// FuzzEventsTarget: whatever an operator writes as eventsUrl, an accepted
// one (Normalize's syntax check, then the target policy) is https and names
// no internal address literal (the delivery's dial check, in package
// delivery, refuses exactly the addresses ForbiddenEventsAddr names).
func FuzzEventsTarget(f *testing.F) {
	for _, s := range []string{
		"https://hooks.example.com/vivi", "http://127.0.0.1:6379/", "https://169.254.169.254/latest/meta-data/",
		"https://[::ffff:127.0.0.1]/", "https://[::ffff:a9fe:a9fe]:443/", "https://[64:ff9b::a9fe:a9fe]/",
		"https://[::127.0.0.1]/", "https://0x7f.1/", "https://2130706433/", "https://100.64.0.1/", "https://[fe80::1%25eth0]/",
		"HTTPS://LOCALHOST./", "https://10.0.0.1.nip.example/", "https://user@1.1.1.1/", "https://[fd00::1]/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if checkEventsURL(raw) != nil || checkEventsTarget(raw, false) != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil || !strings.EqualFold(u.Scheme, "https") {
			t.Fatalf("accepted %q: not https", raw)
		}
		if a, err := netip.ParseAddr(u.Hostname()); err == nil {
			if ForbiddenEventsAddr(a) {
				t.Fatalf("accepted %q: internal address %s", raw, a)
			}
		}
	})
}

func TestForbiddenEventsAddr(t *testing.T) {
	for s, want := range map[string]bool{
		"127.0.0.1": true, "127.255.0.9": true, "10.1.2.3": true, "172.16.0.1": true, "172.31.255.255": true,
		"192.168.1.1": true, "169.254.169.254": true, "100.64.0.1": true, "100.127.255.255": true, "0.0.0.0": true,
		"0.1.2.3": true, "255.255.255.255": true, "224.0.0.1": true, "::": true, "::1": true, "fc00::1": true,
		"fd12:3456::1": true, "fe80::1": true, "ff02::1": true, "::ffff:127.0.0.1": true, "::ffff:10.0.0.1": true,
		"::127.0.0.1": true, "64:ff9b::7f00:1": true, "64:ff9b::a9fe:a9fe": true,
		"8.8.8.8": false, "93.184.216.34": false, "100.128.0.1": false, "172.32.0.1": false,
		"2606:4700:4700::1111": false, "::ffff:8.8.8.8": false, "64:ff9b::808:808": false,
	} {
		if got := ForbiddenEventsAddr(netip.MustParseAddr(s)); got != want {
			t.Errorf("ForbiddenEventsAddr(%s) = %v, want %v", s, got, want)
		}
	}
}
