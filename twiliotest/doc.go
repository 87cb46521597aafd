// Package twiliotest plays Twilio's part for tests, the demo and the load tool.
//
// It has four parts, like net/http/httptest beside net/http:
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
//   - Twilio (NewTwilio, PlaceCall): the whole call as Twilio plays it on a
//     SIP Domain, built from the parts above: the signed voice webhook, the
//     media stream of <Connect><Stream>, the stream and call status
//     callbacks, and what Twilio does when the bridge updates the live call
//     through the REST fake (<Refer> with its refer-status action and the
//     PBX's answer, hang-ups, resuming with a new stream) or closes the
//     websocket itself (the <Connect action>). For end-to-end tests, the
//     demo and the load tool.
//
// The package is never wired into the production server.
package twiliotest
