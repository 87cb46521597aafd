// Package e2e holds the multi-process end-to-end suite (issue 10, part 5):
// real `vivi-bridge serve` binaries, built once per test run, share one
// private redis-server on a loopback port, behind a switchable front that
// sends webhooks, streams, callbacks and admin calls to different pods and
// skips the pods whose /readyz is not 200, like a load balancer. Twilio and
// the model are the in-process fakes (twiliotest, realtimetest).
//
//	go test ./e2e                                  # every scenario (make test runs them)
//	go test -v -run Figures ./e2e -args -figures   # the long figure runs; figures are the "FIGURE" lines
//
// The package has no code outside its tests; this file only names it.
package e2e
