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
//	bins, _ := bintest.Build(ctx, dir)            // or bintest.Prebuilt(dir)
//	lab, err := labrun.Start(ctx, labrun.Config{Bins: bins})
//	defer lab.Close()
//	site, _ := lab.AddSite(ctx, "alice", natlab.PortRestricted) // verified
//	b, _ := lab.StartPeer(ctx, site.Host(), labrun.PeerConfig{AllowAny: true})
//	_, err = b.WaitRegistered(ctx, 10*time.Second)
//	replies, err := a.Ping(ctx, b.ID, labrun.PingOptions{Count: 3}, nil)
//
// When the relay binary has --tls-listen, the lab also runs its TLS stream
// relay on TCP 443 and the rendezvous advertises it (--stream-relay); when
// `peer up` has --stream-relay, every daemon is given it too.
//
// With Config.Regions the servers run as instances in regions behind
// anycast addresses (natlab.AddAnycast, Config.FrontDoor picks the managed
// accelerator or BGP anycast): a relay and a rendezvous per region, sharing
// their keys, the ticket key, the cookie secret and a Redis registry
// (redis-server on the lab host "redis"). Lab.Home makes a region the
// nearest to a site; a health checker asks every instance's /healthz and
// marks a region down at the front door when an instance stops answering;
// Lab.KillRegion kills a region's instances and Lab.RegionKill measures a
// paced stream across it. Config.InstanceArgs (or ExpandArgs templates)
// adds flags per instance, such as a mesh between instances.
//
// It needs root (network namespaces). The package's tests (root only) are
// the lab's end-to-end proofs of the data path and the CI run of the
// traversal matrix; KEYMESH_LAB_BIN=<dir> reuses prebuilt binaries and
// KEYMESH_MATRIX_TYPES=<types> narrows the matrix test.
package labrun
