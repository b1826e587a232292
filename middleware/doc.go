// Package branchmp receives Branch webhooks in an existing HTTP server and
// delivers them to Mixpanel as events and user-profile updates.
//
// A Bridge is an http.Handler. It checks, decodes and queues each webhook
// and responds at once. Identity lookup, mapping, batching and delivery run
// on a bounded pool of background workers:
//
//	bridge, err := branchmp.New(branchmp.Config{Token: token})
//	if err != nil {
//		log.Fatal(err)
//	}
//	router.Handle("/branch", bridge)
//	...
//	defer bridge.Shutdown(ctx)
//
// Events are kept in memory. A crash or a Shutdown whose deadline passes
// loses the events still queued or being retried; Shutdown reports their
// count.
//
// The package lives in the middleware directory; import it as
// "github.com/branchmp/branchmp/middleware" and refer to it as branchmp.
package branchmp
