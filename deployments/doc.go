// Package deployments holds no code; its tests check the manifests beside it
// (docker-compose.yml at the repository root, deployments/kubernetes,
// deployments/prometheus and deployments/grafana) against the code they
// deploy: every file parses, every environment variable is one the CLI
// reads, every metric exists, the stream and consumer names match, grace
// periods exceed shutdown timeouts, and the Prometheus rules pass promtool.
package deployments
