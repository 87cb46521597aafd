package channel

import (
	"context"
	"strings"
	"unicode"

	"go.uber.org/zap"
)

// IPAllowList keeps an outside list of admitted source addresses equal to
// the origin IPs of all channels (Twilio's IP access control list of the
// SIP Domain). The Provisioner calls Sync after every change of channels.
// *ACLSync is one.
type IPAllowList interface {
	Sync(ctx context.Context) (SyncResult, error)
}

// SyncResult is what one sync changed in the allow list.
type SyncResult struct {
	// ListSID identifies the list kept in sync.
	ListSID string
	// Added and Removed are the addresses added and removed, sorted.
	Added, Removed []string
}

// Statuses of an allow-list sync, as ACLStatus.Status.
const (
	ACLSyncOK       = "ok"
	ACLSyncFailed   = "failed"
	ACLSyncDisabled = "disabled"
)

// ACLSyncHeader carries the ACLStatus of a channel change in every answer
// that changed channels, "ok", "disabled" or "failed: <error>"; it is the
// only report of it in the empty answer (204) of a delete.
const ACLSyncHeader = "X-Vivi-ACL-Sync"

// ACLStatus tells how syncing the IP allow list went after a change of
// channels. A failure does not undo the change: the sync is retried in the
// background until it succeeds.
type ACLStatus struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// header is the ACLSyncHeader value: one line, bounded.
func (s ACLStatus) header() string {
	if s.Error == "" {
		return s.Status
	}
	msg := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r > unicode.MaxASCII {
			return ' '
		}
		return r
	}, s.Error)
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return s.Status + ": " + msg
}

// SyncAllowList brings the IP allow list in line with the stored channels,
// after a change of them. It never fails the change: a failure is logged
// and returned as status "failed" (the allow list retries in the
// background); without an allow list the status is "disabled".
func (p *Provisioner) SyncAllowList(ctx context.Context) ACLStatus {
	if p.allow == nil {
		return ACLStatus{Status: ACLSyncDisabled}
	}
	res, err := p.allow.Sync(ctx)
	if err != nil {
		p.log.Warn("IP allow list sync failed; the channel change is stored and the sync is retried in the background",
			zap.Error(err))
		return ACLStatus{Status: ACLSyncFailed, Error: err.Error()}
	}
	if len(res.Added)+len(res.Removed) > 0 {
		p.log.Info("IP allow list synced", zap.String("list_sid", res.ListSID),
			zap.Strings("added", res.Added), zap.Strings("removed", res.Removed))
	}
	return ACLStatus{Status: ACLSyncOK}
}
