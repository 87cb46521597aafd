package delivery

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/vivi/bridge/channel"
)

// defaultTimeout bounds one POST (and so the drain of an attempt in flight).
const defaultTimeout = 10 * time.Second

// dialControl is the net.Dialer Control hook of events delivery: it runs
// after DNS resolution, on the address about to be connected, so a name
// resolving to an internal address (now or after a rebinding) is refused
// whatever it resolved to at validation.
func dialControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q", channel.ErrForbiddenEventsTarget, address)
	}
	if channel.ForbiddenEventsAddr(ap.Addr()) {
		return fmt.Errorf("%w: %s", channel.ErrForbiddenEventsTarget, ap.Addr())
	}
	return nil
}

// NewClient returns the HTTP client of events delivery. Redirects are not
// followed (a 3xx is a failed delivery), so a receiver cannot send the POST
// on to an internal target; no proxy from the environment is used, since
// the dial check must see the receiver's address, not a proxy's. Unless
// allowPrivate, every address dialled is checked (dialControl); r resolves
// names (nil: the system's).
func NewClient(allowPrivate bool, r *net.Resolver) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	d := &net.Dialer{Timeout: defaultTimeout, Resolver: r}
	if !allowPrivate {
		d.Control = dialControl
	}
	t.DialContext = d.DialContext
	return &http.Client{
		Timeout:       defaultTimeout,
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
