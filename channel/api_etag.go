package channel

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
)

// ETag returns the entity tag of v, an agent or a channel as the admin API
// shows it: a strong tag over its JSON, so that any change of a field
// changes it. Clients may send it back in If-Match on PUT and PATCH.
func ETag(v any) string {
	b, err := json.Marshal(v)
	if err != nil { // agents and channels always marshal
		return ""
	}
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// ifMatch returns the request's If-Match, "" when absent. "*" matches any
// existing record, which the check-and-set guarantees anyway.
func ifMatch(r *http.Request) string {
	v := r.Header.Get("If-Match")
	if v == "*" {
		return ""
	}
	return v
}

// checkIfMatch is the If-Match check of an update: want empty or the
// current version's tag.
func checkIfMatch(want string, current any) error {
	if want != "" && want != ETag(current) {
		return ErrPreconditionFailed
	}
	return nil
}
