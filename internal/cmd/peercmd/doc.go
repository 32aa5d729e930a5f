// Package peercmd is the `peer` command: argument parsing, help, and the
// subcommands (keygen, id, up, status, ping, pipe, listen, forward, expose).
// `peer up` runs the daemon (package daemon) on a node; every other command
// talks to that daemon over its Unix socket.
//
// Main runs the command in-process, so tests drive it like the binary.
// Every flag may also be set from the environment: --allow-any is
// KEYMESH_ALLOW_ANY (see package flagenv).
package peercmd
