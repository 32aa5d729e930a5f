// Package labrun runs the project's real binaries (rendezvous, relay, peer)
// inside the NAT lab of package natlab: it builds the three commands once
// into a temporary directory, starts the rendezvous and the relay on a lab
// server, starts peer daemons ("peer up") in site hosts, each with its own
// key and API socket, and drives them with the peer CLI (status, ping, pipe,
// listen). It also runs the traversal matrix (RunMatrix), shared by the
// `loadtest matrix` command and the package's root-only tests.
//
// Every process writes its output to a log file in the run's work
// directory; Lab.DumpLogs prints their tails when something fails. Close
// stops every process and removes the lab; call it on every return path
// (defer, t.Cleanup): cancelling the context given to Start also stops the
// processes, so a command's SIGINT context leaves nothing running.
//
//	bins, _ := labrun.Build(ctx, dir)             // or labrun.Prebuilt(dir)
//	lab, err := labrun.Start(ctx, labrun.Config{Bins: bins})
//	defer lab.Close()
//	site, _ := lab.AddSite(ctx, "alice", natlab.PortRestricted)
//	a, _ := lab.StartPeer(ctx, site.Host(), labrun.PeerConfig{AllowAny: true})
//	replies, _ := a.PingUntil(ctx, b.ID, labrun.PingOptions{}, nil)
//
// It needs root (network namespaces).
package labrun
