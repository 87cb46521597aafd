package channel

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// MaxRequestBody bounds an admin API request body; larger ones are 413.
const MaxRequestBody = 1 << 20

// APIConfig configures the admin API.
type APIConfig struct {
	// AdminToken is the bearer token of /v1/*; empty disables the API (503).
	AdminToken string
	// Logger logs failures (never tokens or secrets); default zap.NewNop().
	Logger *zap.Logger
}

// API is the admin JSON API for agents and channels under /v1.
type API struct {
	tokenSum [sha256.Size]byte
	enabled  bool
	prov     *Provisioner
	log      *zap.Logger
}

// NewAPI returns the admin API over prov.
func NewAPI(cfg APIConfig, prov *Provisioner) *API {
	a := &API{prov: prov, log: cfg.Logger, enabled: cfg.AdminToken != ""}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	a.tokenSum = sha256.Sum256([]byte(cfg.AdminToken))
	return a
}

// Register adds the agent and channel endpoints to mux, each behind
// Authorize. /v1/calls is left to its own handlers (wrap them with
// Authorize too).
func (a *API) Register(mux *http.ServeMux) {
	routes := []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"POST /v1/agents", a.createAgent},
		{"GET /v1/agents", a.listAgents},
		{"GET /v1/agents/{id}", a.getAgent},
		{"PUT /v1/agents/{id}", a.putAgent},
		{"DELETE /v1/agents/{id}", a.deleteAgent},
		{"POST /v1/channels", a.createChannel},
		{"GET /v1/channels", a.listChannels},
		{"GET /v1/channels/{id}", a.getChannel},
		{"PATCH /v1/channels/{id}", a.patchChannel},
		{"DELETE /v1/channels/{id}", a.deleteChannel},
		{"PUT /v1/channels/{id}/origin-ips", a.putOriginIPs},
		{"PUT /v1/channels/{id}/agent", a.putChannelAgent},
	}
	for _, r := range routes {
		mux.Handle(r.pattern, a.Authorize(r.h))
	}
}

// Authorize lets through requests carrying "Authorization: Bearer
// ADMIN_TOKEN" (compared in constant time). Others get 401 unauthorized;
// with no token configured every request gets 503 admin_disabled.
func (a *API) Authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.enabled {
			WriteError(w, http.StatusServiceUnavailable, "admin_disabled", "ADMIN_TOKEN is not set; the admin API is disabled")
			return
		}
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		// Hashing first makes the comparison constant-time in the length too.
		sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vivi-admin"`)
			WriteError(w, http.StatusUnauthorized, "unauthorized", "a valid Authorization: Bearer token is required")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// errorBody is the JSON of every admin API error.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// WriteError answers {"error":{"code":code,"message":message}} with status.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	// Responses may carry an events secret: never cache them.
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away; nothing to do
}
