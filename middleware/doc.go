// Package branchmp receives Branch webhooks in an existing HTTP server and
// delivers them to Mixpanel as events and user-profile updates.
//
// A Bridge is an http.Handler. It checks, decodes and stores each webhook
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
// By default accepted events wait in memory, and a crash loses those not
// yet delivered. With Config.SpoolDir every event is on disk before its
// webhook gets 200, and the next New delivers what a crash or a Shutdown
// deadline left. Shutdown reports the count of events it did not deliver.
//
// The package lives in the middleware directory; import it as
// "github.com/branchmp/branchmp/middleware" and refer to it as branchmp.
package branchmp
