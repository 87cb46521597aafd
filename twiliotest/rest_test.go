package twiliotest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	twilio "github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"
)

// rewriteHost sends every request to the fake, keeping path and query
// (twilio.md §7.4 (a)).
type rewriteHost struct {
	target *url.URL
	base   http.RoundTripper
}

func (r rewriteHost) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Scheme, req.URL.Host = r.target.Scheme, r.target.Host
	return r.base.RoundTrip(req)
}

// twilioClient builds a twilio-go REST client that talks to baseURL.
func twilioClient(t *testing.T, baseURL, account, token string) *twilio.RestClient {
	t.Helper()
	u, err := url.Parse(baseURL)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c := &client.Client{
		Credentials: client.NewCredentials(account, token),
		HTTPClient:  &http.Client{Transport: rewriteHost{target: u, base: tr}},
	}
	c.SetAccountSid(account)
	return twilio.NewRestClientWithParams(twilio.ClientParams{Client: c})
}

func newTestREST(t *testing.T) *REST {
	t.Helper()
	r := NewREST(RESTOptions{AccountSID: testAccount, AuthToken: testToken})
	t.Cleanup(r.Close)
	return r
}

func TestRESTWithTwilioGoUpdateCall(t *testing.T) {
	const twiml = `<Response><Refer action="https://bridge.example.com/twilio/refer-status"><Sip>sip:2001@sbc.example.com:5061;transport=tls</Sip></Refer></Response>`
	tests := map[string]struct {
		params     *openapi.UpdateCallParams
		wantForm   url.Values
		wantStatus string
	}{
		"redirect with Twiml": {
			params:     (&openapi.UpdateCallParams{}).SetTwiml(twiml),
			wantForm:   url.Values{"Twiml": {twiml}},
			wantStatus: "in-progress",
		},
		"hang up": {
			params:     (&openapi.UpdateCallParams{}).SetStatus("completed"),
			wantForm:   url.Values{"Status": {"completed"}},
			wantStatus: "completed",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := newTestREST(t)
			rc := twilioClient(t, r.URL(), testAccount, testToken)
			call, err := rc.Api.UpdateCall("CA123", tc.params)
			if err != nil {
				t.Fatalf("UpdateCall: %v", err)
			}
			if call.Sid == nil || *call.Sid != "CA123" || call.Status == nil || *call.Status != tc.wantStatus {
				t.Errorf("call = %+v", call)
			}
			req, err := r.WaitRequest(ctxT(t), func(RESTRequest) bool { return true })
			if err != nil {
				t.Fatal(err)
			}
			if req.Method != http.MethodPost || req.Path != "/2010-04-01/Accounts/ACtest/Calls/CA123.json" ||
				req.BasicUser != testAccount || req.Status != http.StatusOK {
				t.Errorf("request = %s %s user %q status %d", req.Method, req.Path, req.BasicUser, req.Status)
			}
			if req.Form.Encode() != tc.wantForm.Encode() {
				t.Errorf("form = %v, want exactly %v", req.Form, tc.wantForm)
			}
			fetched, err := rc.Api.FetchCall("CA123", &openapi.FetchCallParams{})
			if err != nil || *fetched.Status != tc.wantStatus {
				t.Errorf("FetchCall = %+v, %v", fetched, err)
			}
			if n := len(r.Requests()); n != 2 {
				t.Errorf("%d requests recorded, want 2", n)
			}
		})
	}
}

func TestRESTErrorsDecodeAsTwilioRestError(t *testing.T) {
	tests := map[string]struct {
		token      string
		hook       func(string, url.Values) (int, string)
		params     *openapi.UpdateCallParams
		wantCode   int
		wantStatus int
	}{
		"wrong token": {token: "wrong123", params: (&openapi.UpdateCallParams{}).SetStatus("completed"),
			wantCode: 20003, wantStatus: 401},
		"Twiml too long": {token: testToken, params: (&openapi.UpdateCallParams{}).SetTwiml(strings.Repeat("x", 4001)),
			wantCode: 32018, wantStatus: 400},
		"overridden answer": {token: testToken, params: (&openapi.UpdateCallParams{}).SetStatus("completed"),
			hook: func(sid string, form url.Values) (int, string) {
				return 404, `{"code":20404,"message":"The requested resource was not found","more_info":"https://www.twilio.com/docs/errors/20404","status":404}`
			},
			wantCode: 20404, wantStatus: 404},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := newTestREST(t)
			r.OnCallUpdate(tc.hook)
			rc := twilioClient(t, r.URL(), testAccount, tc.token)
			_, err := rc.Api.UpdateCall("CA9", tc.params)
			var te *client.TwilioRestError
			if !errors.As(err, &te) || te.Code != tc.wantCode || te.Status != tc.wantStatus {
				t.Fatalf("UpdateCall error = %#v, want code %d status %d", err, tc.wantCode, tc.wantStatus)
			}
			reqs := r.Requests()
			if len(reqs) != 1 || reqs[0].Status != tc.wantStatus {
				t.Errorf("requests = %+v", reqs)
			}
		})
	}
}

func TestRESTRoutesAndAuth(t *testing.T) {
	r := newTestREST(t)
	r.SetHandler("GET /2010-04-01/Accounts/{sid}/SIP/IpAccessControlLists.json", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"ip_access_control_lists":[]}`)
	})
	r.OnCallUpdate(func(sid string, form url.Values) (int, string) { return 200, `{"sid":"` + sid + `"}` })
	r.OnCallUpdate(nil) // back to the default
	httpClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(httpClient.CloseIdleConnections)

	tests := map[string]struct {
		method, path, user, pass string
		wantStatus, wantCode     int
	}{
		"extra route":             {"GET", "/2010-04-01/Accounts/ACtest/SIP/IpAccessControlLists.json", testAccount, testToken, 200, 0},
		"extra route needs auth":  {"GET", "/2010-04-01/Accounts/ACtest/SIP/IpAccessControlLists.json", "", "", 401, 20003},
		"unknown path":            {"GET", "/2010-04-01/Accounts/ACtest/Nothing.json", testAccount, testToken, 404, 20404},
		"other account":           {"POST", "/2010-04-01/Accounts/ACother/Calls/CA1.json", testAccount, testToken, 404, 20404},
		"call without .json":      {"POST", "/2010-04-01/Accounts/ACtest/Calls/CA1", testAccount, testToken, 404, 20404},
		"delete is not allowed":   {"DELETE", "/2010-04-01/Accounts/ACtest/Calls/CA1.json", testAccount, testToken, 405, 20004},
		"wrong user":              {"POST", "/2010-04-01/Accounts/ACtest/Calls/CA1.json", "ACother", testToken, 401, 20003},
		"default update response": {"POST", "/2010-04-01/Accounts/ACtest/Calls/CA1.json", testAccount, testToken, 200, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctxT(t), tc.method, r.URL()+tc.path, strings.NewReader("Status=completed"))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.user != "" {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status %d, want %d (%v)", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantCode != 0 {
				if got := keys(t, body); got != "code,message,more_info,status" {
					t.Errorf("error keys = %s", got)
				}
				if body["code"] != float64(tc.wantCode) || body["status"] != float64(tc.wantStatus) {
					t.Errorf("error body = %v", body)
				}
			}
			got, err := r.WaitRequest(ctxT(t), func(rr RESTRequest) bool {
				return rr.Method == tc.method && rr.Path == tc.path && rr.BasicUser == tc.user && rr.Status == tc.wantStatus
			})
			if err != nil || got.Form.Get("Status") != "completed" {
				t.Errorf("recorded %+v, %v", got, err)
			}
		})
	}
}

func TestRESTWaitRequestEnds(t *testing.T) {
	r := NewREST(RESTOptions{AccountSID: testAccount, AuthToken: testToken})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.WaitRequest(ctx, func(RESTRequest) bool { return true }); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitRequest with a canceled context = %v", err)
	}
	r.Close()
	r.Close() // idempotent
	if _, err := r.WaitRequest(context.Background(), func(RESTRequest) bool { return true }); !errors.Is(err, ErrRESTClosed) {
		t.Errorf("WaitRequest after Close = %v, want ErrRESTClosed", err)
	}
}
