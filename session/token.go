package session

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token errors. Every verification failure wraps ErrTokenInvalid.
var (
	ErrTokenInvalid   = errors.New("stream token invalid")
	ErrTokenExpired   = fmt.Errorf("%w: expired", ErrTokenInvalid)
	ErrTokenCallSID   = fmt.Errorf("%w: issued for another call", ErrTokenInvalid)
	ErrTokenSignature = fmt.Errorf("%w: bad signature", ErrTokenInvalid)
)

// MinTokenSecret is the shortest accepted STREAM_TOKEN_SECRET, in bytes.
const MinTokenSecret = 32

// Claims is what a stream token binds: the call, its channel and agent, a
// one-time id (the store records its use) and an expiry.
type Claims struct {
	ID        string `json:"jti"`
	CallSID   string `json:"sid"`
	ChannelID string `json:"ch"`
	AgentID   string `json:"ag"`
	ExpiresAt int64  `json:"exp"` // unix seconds
}

// Tokens signs and verifies stream tokens with an HMAC-SHA256 key shared by
// all pods, so that any pod can accept a stream without asking the store.
type Tokens struct {
	secret []byte
	ttl    time.Duration
}

// NewTokens returns a token signer. secret must be at least MinTokenSecret bytes.
func NewTokens(secret []byte, ttl time.Duration) (*Tokens, error) {
	if len(secret) < MinTokenSecret {
		return nil, fmt.Errorf("stream token secret: need at least %d bytes, got %d", MinTokenSecret, len(secret))
	}
	if ttl <= 0 {
		ttl = 2 * time.Minute
	}
	return &Tokens{secret: append([]byte(nil), secret...), ttl: ttl}, nil
}

// TTL returns how long issued tokens are valid.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// Issue returns a new signed token for the call and its claims.
func (t *Tokens) Issue(callSID, channelID, agentID string, now time.Time) (string, Claims, error) {
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", Claims{}, fmt.Errorf("stream token: random id: %w", err)
	}
	c := Claims{
		ID:        hex.EncodeToString(id[:]),
		CallSID:   callSID,
		ChannelID: channelID,
		AgentID:   agentID,
		ExpiresAt: now.Add(t.ttl).Unix(),
	}
	token, err := t.Sign(c)
	if err != nil {
		return "", Claims{}, err
	}
	return token, c, nil
}

// Sign returns the token for claims c. Signing is deterministic: the claims
// of an issued token sign that same token again.
func (t *Tokens) Sign(c Claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("stream token: encode: %w", err)
	}
	p := base64.RawURLEncoding.EncodeToString(payload)
	return p + "." + base64.RawURLEncoding.EncodeToString(t.mac(p)), nil
}

// Verify checks the token's signature, its expiry at now and that it was
// issued for callSID. It does not check one-time use: that is the store's.
func (t *Tokens) Verify(token, callSID string, now time.Time) (Claims, error) {
	p, sig, ok := strings.Cut(token, ".")
	if !ok || p == "" || sig == "" {
		return Claims{}, fmt.Errorf("%w: malformed", ErrTokenInvalid)
	}
	got, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(got, t.mac(p)) {
		return Claims{}, ErrTokenSignature
	}
	payload, err := b64.DecodeString(p)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload encoding", ErrTokenInvalid)
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil || c.ID == "" || c.CallSID == "" {
		return Claims{}, fmt.Errorf("%w: payload", ErrTokenInvalid)
	}
	if now.Unix() >= c.ExpiresAt {
		return Claims{}, ErrTokenExpired
	}
	if c.CallSID != callSID {
		return Claims{}, ErrTokenCallSID
	}
	return c, nil
}

func (t *Tokens) mac(payload string) []byte {
	m := hmac.New(sha256.New, t.secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// b64 decodes strictly, so that a token has exactly one valid spelling.
var b64 = base64.RawURLEncoding.Strict()
