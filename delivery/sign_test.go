package delivery_test

import (
	"testing"

	"github.com/vivi/bridge/delivery"
)

// The example of the Standard Webhooks specification (its test vector).
func TestSignStandardVector(t *testing.T) {
	got := delivery.SignStandard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
		1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("SignStandard = %s, want %s", got, want)
	}
	if delivery.SignStandard("plain", "id", 1, nil) == delivery.SignStandard("other", "id", 1, nil) {
		t.Fatal("a plain secret is not used as the key")
	}
}
