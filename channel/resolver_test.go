package channel_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/vivi/bridge/channel"
)

func TestResolverLookupIPv4(t *testing.T) {
	dns := startDNS(t)
	dns.setA("one.example.test", "198.51.100.7")
	dns.setA("many.example.test", "198.51.100.9", "198.51.100.10", "198.51.100.9", "192.0.2.1")
	dns.setAAAA("v6only.example.test", "2001:db8::1")
	r := &channel.Resolver{R: dns.resolver(), Timeout: 2 * time.Second}

	tests := map[string]struct {
		host     string
		want     []string
		wantCode string
	}{
		"one A record":          {host: "one.example.test", want: []string{"198.51.100.7"}},
		"several, sorted dedup": {host: "many.example.test", want: []string{"192.0.2.1", "198.51.100.9", "198.51.100.10"}},
		"case insensitive":      {host: "ONE.example.test", want: []string{"198.51.100.7"}},
		"IPv4 literal, no DNS":  {host: "203.0.113.5", want: []string{"203.0.113.5"}},
		"AAAA only":             {host: "v6only.example.test", wantCode: channel.CodeDNSResolutionFailed},
		"NXDOMAIN":              {host: "missing.example.test", wantCode: channel.CodeDNSResolutionFailed},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := r.LookupIPv4(context.Background(), tc.host)
			if tc.wantCode != "" {
				var v *channel.ValidationError
				if !errors.As(err, &v) || v.Code != tc.wantCode || v.Field != "originHost" {
					t.Fatalf("LookupIPv4(%q) = %v, %v; want a %s error on originHost", tc.host, got, err, tc.wantCode)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("LookupIPv4(%q) = %v, %v; want %v", tc.host, got, err, tc.want)
			}
		})
	}
}

func TestResolverTimeoutIsBounded(t *testing.T) {
	r := &channel.Resolver{R: resolverAt(startSilentDNS(t)), Timeout: 200 * time.Millisecond}
	done := make(chan error, 1)
	go func() {
		_, err := r.LookupIPv4(context.Background(), "slow.example.test")
		done <- err
	}()
	select {
	case err := <-done:
		var v *channel.ValidationError
		if !errors.As(err, &v) || v.Code != channel.CodeDNSResolutionFailed {
			t.Fatalf("err = %v; want dns_resolution_failed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a lookup against a silent server did not end within its timeout")
	}
}

func TestResolverZeroValueTakesIPv4Literal(t *testing.T) {
	var r channel.Resolver
	got, err := r.LookupIPv4(context.Background(), "192.0.2.44")
	if err != nil || !slices.Equal(got, []string{"192.0.2.44"}) {
		t.Fatalf("got %v, %v", got, err)
	}
}
