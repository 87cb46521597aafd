// Package twiliotest plays Twilio's part for tests, the demo and the load tool.
//
// It has three parts, like net/http/httptest beside net/http:
//
//   - Call (Dial): a Media Streams client that behaves like Twilio on a
//     bidirectional <Connect><Stream>: it signs the websocket handshake, sends
//     connected, start and a μ-law media frame every 20 ms, sends DTMF and
//     stop, and plays the audio the server sends back in real time (8 bytes
//     per ms), echoing marks when their audio has played and on clear.
//     Everything the server sent is validated as strictly as Twilio does
//     (warnings 31950/31951) and recorded.
//   - REST: a fake of the Twilio REST API (call updates) on 127.0.0.1 that
//     records every request.
//   - SignForm, PostForm, NewCallSID: helpers to send signed webhooks.
//
// The package is never wired into the production server.
package twiliotest
