package store

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"

	"github.com/vivi/bridge/channel"
)

// This file holds the routing-index rules shared by Memory and Redis, so that
// both stores decide conflicts and index changes with the same code. A store
// fetches the current state the plan needs (stored versions of the touched
// channels, current owners of the claimed pairs), calls plan, and applies the
// resulting change atomically.

var errEmptyID = errors.New("empty id")

// pair is one routing entry: calls from ip to extension ext go to one channel.
type pair struct{ ip, ext string }

// field is the pair's name in the routes hash. Extensions are digits and IPs
// never contain '|', so the encoding is unambiguous.
func (p pair) field() string { return p.ip + "|" + p.ext }

// pairsOf returns the routing pairs of c (OriginIPs x Extensions), without
// duplicates or empty parts, in a stable order.
func pairsOf(c *channel.Channel) []pair {
	ips, exts := uniq(c.OriginIPs), uniq(c.Extensions)
	out := make([]pair, 0, len(ips)*len(exts))
	for _, ip := range ips {
		for _, ext := range exts {
			out = append(out, pair{ip, ext})
		}
	}
	return out
}

// uniq returns the non-empty values of in, sorted and without duplicates.
func uniq(in []string) []string {
	out := make([]string, 0, len(in))
	for _, v := range in {
		if v != "" {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// route is a routes-hash entry to write.
type route struct {
	pair
	channelID string
}

// ipMember is a channel ID to add to or remove from an IP's set.
type ipMember struct{ ip, channelID string }

// channelBatch is a set of channels to write and channel IDs to delete.
type channelBatch struct {
	put []channel.Channel // deduplicated (last wins), sorted by ID
	del []string
	// expect, when set, is the check of a check-and-set: the stored version
	// of each named channel must be the given one (nil: none stored).
	expect map[string]*channel.Channel
}

func newBatch(put []channel.Channel, del []string) (channelBatch, error) {
	byID := make(map[string]channel.Channel, len(put))
	for _, c := range put {
		if c.ID == "" {
			return channelBatch{}, errEmptyID
		}
		byID[c.ID] = c
	}
	b := channelBatch{put: make([]channel.Channel, 0, len(byID)), del: uniq(del)}
	for _, c := range byID {
		b.put = append(b.put, c)
	}
	sort.Slice(b.put, func(i, j int) bool { return b.put[i].ID < b.put[j].ID })
	return b, nil
}

// ids returns every channel ID the batch touches.
func (b channelBatch) ids() []string {
	ids := slices.Clone(b.del)
	for _, c := range b.put {
		ids = append(ids, c.ID)
	}
	return uniq(ids)
}

// pairs returns every pair the batch's channels claim.
func (b channelBatch) pairs() []pair {
	var out []pair
	for i := range b.put {
		out = append(out, pairsOf(&b.put[i])...)
	}
	return out
}

// configChange is the effect of a batch on the routing index.
type configChange struct {
	delRoutes []pair
	setRoutes []route
	ipRemove  []ipMember
	ipAdd     []ipMember
}

// plan checks the batch for conflicts and computes its index change. stored
// holds the current versions of the touched channels that exist; owners the
// current owner of each pair in b.pairs() that has one. On a conflict it
// returns a *ConflictError and the store must change nothing.
func (b channelBatch) plan(stored map[string]channel.Channel, owners map[pair]string) (*configChange, error) {
	for id, want := range b.expect {
		got, had := stored[id]
		switch {
		case want == nil && had:
			return nil, fmt.Errorf("channel %q %w", id, channel.ErrExists)
		case want != nil && (!had || !reflect.DeepEqual(got, *want)):
			return nil, fmt.Errorf("channel %q: %w", id, channel.ErrStale)
		}
	}
	touched := make(map[string]bool)
	for _, id := range b.ids() {
		touched[id] = true
	}
	// Within the batch, a pair may be claimed by one channel only.
	claimed := make(map[pair]string)
	var order []route
	for i := range b.put {
		c := &b.put[i]
		for _, p := range pairsOf(c) {
			if other, ok := claimed[p]; ok && other != c.ID {
				return nil, &ConflictError{ChannelID: other, IP: p.ip, Extension: p.ext}
			}
			claimed[p] = c.ID
			order = append(order, route{p, c.ID})
		}
	}
	// Against the store, a pair may move only from a channel the batch rewrites
	// (or deletes); the check above already covers the rewritten version.
	ch := &configChange{}
	for _, r := range order {
		owner, ok := owners[r.pair]
		if ok && owner != r.channelID && !touched[owner] {
			return nil, &ConflictError{ChannelID: owner, IP: r.ip, Extension: r.ext}
		}
		if !ok || owner != r.channelID {
			ch.setRoutes = append(ch.setRoutes, r)
		}
	}
	newVersion := make(map[string]*channel.Channel, len(b.put))
	for i := range b.put {
		newVersion[b.put[i].ID] = &b.put[i]
	}
	for _, id := range b.ids() {
		old, had := stored[id]
		var oldIPs, newIPs []string
		if had {
			// By the index invariant every old pair is owned by id.
			for _, p := range pairsOf(&old) {
				if _, still := claimed[p]; !still {
					ch.delRoutes = append(ch.delRoutes, p)
				}
			}
			oldIPs = uniq(old.OriginIPs)
		}
		if c, ok := newVersion[id]; ok {
			newIPs = uniq(c.OriginIPs)
		}
		for _, ip := range oldIPs {
			if !slices.Contains(newIPs, ip) {
				ch.ipRemove = append(ch.ipRemove, ipMember{ip, id})
			}
		}
		for _, ip := range newIPs {
			if !slices.Contains(oldIPs, ip) {
				ch.ipAdd = append(ch.ipAdd, ipMember{ip, id})
			}
		}
	}
	return ch, nil
}
