// Package kubernetes holds no code: its test validates the manifests in
// this folder against the Kubernetes API types (k8s.io/api) offline, and
// checks that every container runs without privileges. It is a module of
// its own so that the main module does not depend on the Kubernetes API.
package kubernetes
