package channel

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// EventSignatureHeader carries the signature of a call event POST (package
// delivery posts the events; it also sends the Standard Webhooks headers).
const EventSignatureHeader = "X-Vivi-Signature"

// SignEvent returns the X-Vivi-Signature value of body sent at unix time t:
// "t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with secret>".
func SignEvent(secret string, t int64, body []byte) string {
	ts := strconv.FormatInt(t, 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}
