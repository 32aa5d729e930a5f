package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/testutil/pebbletest"
)

func TestSelfSignedCarriesIdentity(t *testing.T) {
	id, _ := crypto.GenerateIdentity(nil)
	tc, err := TLSConfig(context.Background(), Config{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	got, err := crypto.PeerFromCertificate(tc.Certificates[0].Certificate[0])
	if err != nil || got != id.ID() {
		t.Fatalf("certificate carries %v (%v), want %v", got, err, id.ID())
	}
}

func TestACMEFromPebble(t *testing.T) {
	ca := pebbletest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tc, err := TLSConfig(ctx, Config{
		Domains:     []string{"localhost"},
		Email:       "ops@example.org",
		CA:          ca.Directory,
		CARootsFile: ca.RootsFile,
		StorageDir:  t.TempDir(),
		HTTPPort:    ca.HTTPPort,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Serve TLS with it and check the certificate a client sees is pebble's.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if len(leaf.DNSNames) == 0 || leaf.DNSNames[0] != "localhost" || !strings.Contains(strings.ToLower(leaf.Issuer.CommonName), "pebble") {
		t.Fatalf("certificate for %v issued by %q, want localhost from pebble", leaf.DNSNames, leaf.Issuer.CommonName)
	}
}

func TestUnreachableCAIsOneLine(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close() // nothing listens here now
	_, err := TLSConfig(context.Background(), Config{Domains: []string{"localhost"}, Email: "ops@example.org", CA: "https://" + addr + "/dir", StorageDir: t.TempDir()})
	if !errors.Is(err, ErrUnreachable) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v", err)
	}
}
