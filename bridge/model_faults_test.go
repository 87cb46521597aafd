package bridge

import (
	"context"
	"net/http"
	"net/url"
	"strings"
)

// UpdateTwiML replaces a call's TwiML through the Twilio REST fake, like
// transfer.Twilio.
func (rc restCalls) UpdateTwiML(ctx context.Context, callSID, twiml string) error {
	u := rc.rest.URL() + "/2010-04-01/Accounts/" + testAccount + "/Calls/" + callSID + ".json"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(url.Values{"Twiml": {twiml}}.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(testAccount, testAuthToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errHTTP(resp.StatusCode)
	}
	return nil
}

type errHTTP int

func (e errHTTP) Error() string { return "update call: HTTP " + http.StatusText(int(e)) }
