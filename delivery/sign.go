package delivery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
)

// Headers of an event POST besides channel.EventSignatureHeader: those of
// Standard Webhooks (https://www.standardwebhooks.com).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SignStandard returns the webhook-signature value of body sent as event
// id at unix time ts: "v1," + base64(HMAC-SHA256(key, id.ts.body)), the
// key being the base64 decoding of secret after a "whsec_" prefix, else
// the secret's bytes.
func SignStandard(secret, id string, ts int64, body []byte) string {
	key := []byte(secret)
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		if k, err := base64.StdEncoding.DecodeString(rest); err == nil {
			key = k
		}
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
