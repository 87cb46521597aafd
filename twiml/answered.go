package twiml

import (
	"sync"
	"time"
)

// AnswerTimeout is how long a call answered with <Connect> counts against
// this pod's MaxCalls while its stream has not started here. Twilio opens
// the stream within a second or two; the bridge gives up on a stream that
// sends no start after 10 s.
const AnswerTimeout = 10 * time.Second

// Answered counts the calls this pod answered with <Connect><Stream> whose
// stream has not started on it yet, so that a burst of webhooks cannot all
// be answered before any stream opens (the bridge counts only open
// streams). A call stops counting when its stream starts here (Started, by
// the stream token's id) or when AnswerTimeout has passed (its stream went to
// another pod, or never came). Safe for concurrent use; it holds at most
// MaxCalls entries, expired ones are dropped as new ones come.
type Answered struct {
	mu    sync.Mutex
	now   func() time.Time
	ttl   time.Duration
	calls map[string]answeredCall // by call SID
	ids   map[string]string       // stream token id -> call SID
	held  map[string]int          // by call SID: webhooks past the limit check, not answered yet
}

// answeredCall is one call waiting for its stream.
type answeredCall struct {
	id    string    // its stream token's id
	until time.Time // when it stops counting
}

// NewAnswered returns an empty count whose entries last ttl (AnswerTimeout
// when not positive) on clock now (time.Now when nil).
func NewAnswered(ttl time.Duration, now func() time.Time) *Answered {
	if ttl <= 0 {
		ttl = AnswerTimeout
	}
	if now == nil {
		now = time.Now
	}
	return &Answered{now: now, ttl: ttl, calls: map[string]answeredCall{}, ids: map[string]string{}, held: map[string]int{}}
}

// Started records that the stream of the call answered with the stream
// token id started on this pod (where the bridge now counts it). Unknown
// ids (calls answered by another pod) are ignored.
func (a *Answered) Started(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sid, ok := a.ids[id]; ok {
		delete(a.ids, id)
		delete(a.calls, sid)
	}
}

// Len returns the answered calls still waiting for their stream, and the
// webhooks being answered.
func (a *Answered) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.prune()
	return a.count()
}

// count is the number of calls counted: answered ones and those being
// answered, each call once. The caller holds mu.
func (a *Answered) count() int {
	n := len(a.calls)
	for sid := range a.held {
		if _, ok := a.calls[sid]; !ok {
			n++
		}
	}
	return n
}

// place is a webhook's claim on the limit: held while the webhook is being
// answered, not when its call was already counted (a retry).
type place struct{ held bool }

// reserve takes a place for a webhook of callSID about to be answered when
// active streams, answered calls and other reservations leave room under
// max; it returns whether it did and the count it judged. A call already
// counted (a retried webhook) always gets through without a new place, so
// a true retry connects even at the limit. Each true must be followed by
// one commit or release.
func (a *Answered) reserve(callSID string, active, max int) (place, bool, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.prune()
	n := active + a.count()
	if _, ok := a.calls[callSID]; ok {
		return place{}, true, n
	}
	if a.held[callSID] == 0 && n >= max {
		return place{}, false, n
	}
	a.held[callSID]++ // concurrent deliveries of one webhook share its place
	return place{held: true}, true, n
}

// commit turns a place into a call waiting for the stream of token id. A
// call already counted keeps its first entry and deadline.
func (a *Answered) commit(p place, callSID, id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p.held {
		a.unhold(callSID)
	}
	if _, ok := a.calls[callSID]; ok {
		return
	}
	a.calls[callSID] = answeredCall{id: id, until: a.now().Add(a.ttl)}
	a.ids[id] = callSID
}

// release gives a place back (the webhook of callSID was not answered with
// <Connect>).
func (a *Answered) release(p place, callSID string) {
	if !p.held {
		return
	}
	a.mu.Lock()
	a.unhold(callSID)
	a.mu.Unlock()
}

// unhold ends one webhook's hold of callSID's place. The caller holds mu.
func (a *Answered) unhold(callSID string) {
	if a.held[callSID]--; a.held[callSID] <= 0 {
		delete(a.held, callSID)
	}
}

// prune drops the entries whose time is up. The caller holds mu. The maps
// hold at most max entries, so a sweep per webhook is cheap.
func (a *Answered) prune() {
	now := a.now()
	for sid, c := range a.calls {
		if !now.Before(c.until) {
			delete(a.calls, sid)
			delete(a.ids, c.id)
		}
	}
}
