// Package deploy holds georep's deployment files — systemd units, the
// container image's Dockerfile and Kubernetes manifests — and the tests that
// check them as far as a machine without systemd running, a container
// daemon or a cluster allows. It has no code a binary imports.
package deploy
