package channel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"
)

// twilioPageSize is the largest page Twilio serves: an account has at most
// 1,000 lists and a list at most 100 entries, so one page is the rule.
const twilioPageSize = 1000

// maxFriendlyName is Twilio's limit on FriendlyName.
const maxFriendlyName = 255

// reconcile makes Twilio's list equal to the channels' origin IPs: the
// list exists (once), is mapped to the domain for calls, and holds exactly
// those addresses. It only reads when all of that is true already.
func (s *ACLSync) reconcile(ctx context.Context) (SyncResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	list, err := s.ensureList(ctx)
	if err != nil {
		return SyncResult{}, err
	}
	res := SyncResult{ListSID: list}
	if err := s.ensureMapped(ctx, list); err != nil {
		return res, err
	}
	// Twilio's entries first, the channels second: an entry listed here was
	// added before the channels are read, so removing it because no channel
	// names it cannot undo the sync of a newer channel (see ACLSync).
	entries, err := s.listIPs(ctx, list)
	if err != nil {
		return res, err
	}
	want, err := s.wantedIPs(ctx)
	if err != nil {
		return res, err
	}
	kept := map[string]bool{}
	for _, e := range entries {
		ip := deref(e.IpAddress)
		if _, ok := want[ip]; ok && !kept[ip] && (e.CidrPrefixLength == 0 || e.CidrPrefixLength == 32) {
			kept[ip] = true
			continue
		}
		// Not a channel's, a duplicate, or a range: the list is ours.
		if err := s.step(ctx); err != nil {
			return res, err
		}
		if err := s.api.DeleteSipIpAddress(list, deref(e.Sid), nil); err != nil && !isNotFound(err) {
			return res, fmt.Errorf("channel: acl sync: remove %s: %w", ip, err)
		}
		res.Removed = append(res.Removed, ip)
	}
	failed := map[string]error{}
	for _, ip := range slices.Sorted(maps.Keys(want)) {
		if kept[ip] {
			continue
		}
		if err := s.step(ctx); err != nil {
			return res, err
		}
		p := (&openapi.CreateSipIpAddressParams{}).SetIpAddress(ip).SetFriendlyName(entryName(want[ip]))
		if _, err := s.api.CreateSipIpAddress(list, p); err != nil {
			failed[ip] = err
			continue
		}
		res.Added = append(res.Added, ip)
	}
	slices.Sort(res.Removed)
	if len(failed) == 0 {
		return res, nil
	}
	// Another pod may have added them meanwhile ("already exists"): look again.
	now, err := s.listIPs(ctx, list)
	if err != nil {
		return res, err
	}
	for _, e := range now {
		delete(failed, deref(e.IpAddress))
	}
	if len(failed) > 0 {
		ip := slices.Min(slices.Collect(maps.Keys(failed)))
		return res, fmt.Errorf("channel: acl sync: add %s: %w", ip, failed[ip])
	}
	return res, nil
}

// ensureList returns the SID of the list called s.name, creating it when
// missing. Duplicates (two pods creating it at once) are removed, keeping
// the smallest SID, the same choice on every pod.
func (s *ACLSync) ensureList(ctx context.Context) (string, error) {
	sids, err := s.findLists(ctx)
	if err != nil {
		return "", err
	}
	if len(sids) == 0 {
		if err := s.step(ctx); err != nil {
			return "", err
		}
		_, cerr := s.api.CreateSipIpAccessControlList((&openapi.CreateSipIpAccessControlListParams{}).SetFriendlyName(s.name))
		// Whether or not that worked, look again: another pod may have
		// created one at the same time.
		if sids, err = s.findLists(ctx); err != nil {
			return "", err
		}
		if len(sids) == 0 {
			if cerr == nil {
				cerr = errors.New("created, but not listed")
			}
			return "", fmt.Errorf("channel: acl sync: create IP access control list %q: %w", s.name, cerr)
		}
	}
	slices.Sort(sids)
	for _, dup := range sids[1:] {
		if err := s.removeList(ctx, dup); err != nil {
			return "", err
		}
	}
	return sids[0], nil
}

// removeList unmaps a duplicate list from the domain and deletes it; what
// another pod removed already is no error.
func (s *ACLSync) removeList(ctx context.Context, sid string) error {
	if err := s.step(ctx); err != nil {
		return err
	}
	if err := s.api.DeleteSipAuthCallsIpAccessControlListMapping(s.domain, sid, nil); err != nil && !isNotFound(err) {
		return fmt.Errorf("channel: acl sync: unmap duplicate list %s: %w", sid, err)
	}
	if err := s.step(ctx); err != nil {
		return err
	}
	if err := s.api.DeleteSipIpAccessControlList(sid, nil); err != nil && !isNotFound(err) {
		return fmt.Errorf("channel: acl sync: delete duplicate list %s: %w", sid, err)
	}
	return nil
}

// findLists returns the SIDs of the account's lists called s.name.
func (s *ACLSync) findLists(ctx context.Context) ([]string, error) {
	if err := s.step(ctx); err != nil {
		return nil, err
	}
	lists, err := s.api.ListSipIpAccessControlList((&openapi.ListSipIpAccessControlListParams{}).SetPageSize(twilioPageSize))
	if err != nil {
		return nil, fmt.Errorf("channel: acl sync: list IP access control lists: %w", err)
	}
	var sids []string
	for _, l := range lists {
		if deref(l.FriendlyName) == s.name && deref(l.Sid) != "" {
			sids = append(sids, *l.Sid)
		}
	}
	return sids, nil
}

// ensureMapped maps the list to the domain for calls unless it is already.
func (s *ACLSync) ensureMapped(ctx context.Context, list string) error {
	mapped, err := s.isMapped(ctx, list)
	if err != nil || mapped {
		return err
	}
	if err := s.step(ctx); err != nil {
		return err
	}
	p := (&openapi.CreateSipAuthCallsIpAccessControlListMappingParams{}).SetIpAccessControlListSid(list)
	_, cerr := s.api.CreateSipAuthCallsIpAccessControlListMapping(s.domain, p)
	if cerr == nil {
		return nil
	}
	// "Already associated": another pod mapped it meanwhile. Look again.
	if mapped, err = s.isMapped(ctx, list); err != nil || mapped {
		return err
	}
	return fmt.Errorf("channel: acl sync: map list %s to SIP Domain %s: %w", list, s.domain, cerr)
}

// isMapped reports whether the list is mapped to the domain for calls (a
// mapping's SID is the list's).
func (s *ACLSync) isMapped(ctx context.Context, list string) (bool, error) {
	if err := s.step(ctx); err != nil {
		return false, err
	}
	ms, err := s.api.ListSipAuthCallsIpAccessControlListMapping(s.domain,
		(&openapi.ListSipAuthCallsIpAccessControlListMappingParams{}).SetPageSize(twilioPageSize))
	if err != nil {
		return false, fmt.Errorf("channel: acl sync: list IP access control list mappings of SIP Domain %s: %w", s.domain, err)
	}
	return slices.ContainsFunc(ms, func(m openapi.ApiV2010SipAuthCallsIpAccessControlListMapping) bool {
		return deref(m.Sid) == list
	}), nil
}

func (s *ACLSync) listIPs(ctx context.Context, list string) ([]openapi.ApiV2010SipIpAddress, error) {
	if err := s.step(ctx); err != nil {
		return nil, err
	}
	ips, err := s.api.ListSipIpAddress(list, (&openapi.ListSipIpAddressParams{}).SetPageSize(twilioPageSize))
	if err != nil {
		return nil, fmt.Errorf("channel: acl sync: list IP addresses of %s: %w", list, err)
	}
	return ips, nil
}

// wantedIPs maps each origin IP of the stored channels to the ids of the
// channels that name it, sorted.
func (s *ACLSync) wantedIPs(ctx context.Context) (map[string][]string, error) {
	chans, err := s.channels.Channels(ctx)
	if err != nil {
		return nil, fmt.Errorf("channel: acl sync: channels: %w", err)
	}
	want := map[string][]string{}
	for _, c := range chans {
		for _, ip := range c.OriginIPs {
			want[ip] = append(want[ip], c.ID)
		}
	}
	for _, ids := range want {
		slices.Sort(ids)
	}
	return want, nil
}

// step stops a reconcile between two REST calls once ctx has ended:
// twilio-go takes no context, each call is bounded by the transport.
func (s *ACLSync) step(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("channel: acl sync: %w", err)
	}
	return nil
}

// entryName is an entry's FriendlyName: the channels that named the IP
// when it was added (not updated later).
func entryName(channelIDs []string) string {
	name := "vivi: " + strings.Join(channelIDs, ", ")
	if len(name) > maxFriendlyName {
		name = name[:maxFriendlyName-3] + "..."
	}
	return name
}

func isNotFound(err error) bool {
	var te *client.TwilioRestError
	return errors.As(err, &te) && te.Status == http.StatusNotFound
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
