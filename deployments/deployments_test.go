package deployments

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/worker"
	"go.yaml.in/yaml/v3"
)

// root is the repository root, relative to this package's directory (where
// go test runs).
const root = ".."

// yamlFiles lists every YAML file the deployment consists of.
func yamlFiles(t *testing.T) []string {
	t.Helper()
	files := []string{filepath.Join(root, "docker-compose.yml")}
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(p); !d.IsDir() && (ext == ".yml" || ext == ".yaml") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// decodeAll parses every document of a YAML file.
func decodeAll(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

func TestEveryFileParses(t *testing.T) {
	ys := yamlFiles(t)
	if len(ys) < 15 {
		t.Fatalf("found only %d YAML files: %v", len(ys), ys)
	}
	for _, p := range ys {
		if docs := decodeAll(t, p); len(docs) == 0 {
			t.Errorf("%s: no YAML document", p)
		}
	}
	js, err := filepath.Glob("grafana/dashboards/*.json")
	if err != nil || len(js) == 0 {
		t.Fatalf("no dashboard JSON found (%v)", err)
	}
	for _, p := range js {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// cliEnv builds the binary once and reads, from each subcommand's --help,
// the environment variables it knows (printed as [$NAME]).
var cliEnv = sync.OnceValues(func() (map[string]map[string]bool, error) {
	bin, err := testenv.HandoffBinary()
	if err != nil {
		return nil, err
	}
	re := regexp.MustCompile(`\[\$([A-Z0-9_]+)\]`)
	env := map[string]map[string]bool{}
	for _, sub := range []string{"worker", "gateway", "setup", "livechat-sim", "publish", "dev", "dlq list", "dlq replay"} {
		out, err := exec.Command(bin, append(strings.Fields(sub), "--help")...).Output()
		if err != nil {
			return nil, errors.New(sub + " --help: " + err.Error())
		}
		env[sub] = map[string]bool{}
		for _, m := range re.FindAllStringSubmatch(string(out), -1) {
			env[sub][m[1]] = true
		}
		if len(env[sub]) == 0 {
			return nil, errors.New(sub + " --help lists no environment variable: has its format changed?")
		}
	}
	return env, nil
})

// goRuntimeEnv are variables read by the Go runtime, not by handoff's flags,
// that the manifests set on purpose.
var goRuntimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true}

func knownTo(t *testing.T, sub string) map[string]bool {
	t.Helper()
	env, err := cliEnv()
	if err != nil {
		t.Fatal(err)
	}
	known, ok := env[sub]
	if !ok {
		t.Fatalf("no subcommand %q", sub)
	}
	return known
}

func knownToAny(t *testing.T, name string) bool {
	t.Helper()
	env, err := cliEnv()
	if err != nil {
		t.Fatal(err)
	}
	for _, known := range env {
		if known[name] {
			return true
		}
	}
	return false
}

// asMap and asList walk the untyped YAML trees.
func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }
func asList(v any) []any         { l, _ := v.([]any); return l }
func asString(v any) string      { s, _ := v.(string); return s }

func TestComposeEnvIsKnownToTheCLI(t *testing.T) {
	doc := decodeAll(t, filepath.Join(root, "docker-compose.yml"))[0]
	checked := 0
	for name, svc := range asMap(doc["services"]) {
		s := asMap(svc)
		if asString(s["image"]) != "handoff:local" {
			continue // nats, redis, prometheus, ...
		}
		cmd := asList(s["command"])
		if len(cmd) == 0 {
			t.Errorf("service %s runs the handoff image without a subcommand", name)
			continue
		}
		known := knownTo(t, asString(cmd[0]))
		env := asMap(s["environment"])
		if env == nil {
			t.Errorf("service %s: environment is not a map (or empty)", name)
		}
		for k := range env {
			checked++
			if !known[k] && !goRuntimeEnv[k] {
				t.Errorf("compose service %s sets %s, which `handoff %s` does not read", name, k, cmd[0])
			}
		}
	}
	if checked < 10 {
		t.Errorf("checked only %d variables: is the compose file still read right?", checked)
	}
}

// kubeDocs returns every Kubernetes object in deployments/kubernetes.
func kubeDocs(t *testing.T) map[string][]map[string]any {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string][]map[string]any{}
	for _, f := range files {
		for _, d := range decodeAll(t, f) {
			k := asString(d["kind"])
			byKind[k] = append(byKind[k], d)
		}
	}
	return byKind
}

// podSpec finds the pod spec of a Deployment or Job.
func podSpec(obj map[string]any) map[string]any {
	return asMap(asMap(asMap(obj["spec"])["template"])["spec"])
}

func name(obj map[string]any) string { return asString(asMap(obj["metadata"])["name"]) }

func TestKubernetesEnvIsKnownToTheCLI(t *testing.T) {
	docs := kubeDocs(t)
	containers := 0
	for _, kind := range []string{"Deployment", "Job"} {
		for _, obj := range docs[kind] {
			for _, c := range asList(podSpec(obj)["containers"]) {
				c := asMap(c)
				containers++
				args := asList(c["args"])
				if len(args) == 0 {
					t.Errorf("%s %s: container without a subcommand in args", kind, name(obj))
					continue
				}
				known := knownTo(t, asString(args[0]))
				for _, e := range asList(c["env"]) {
					n := asString(asMap(e)["name"])
					if !known[n] && !goRuntimeEnv[n] {
						t.Errorf("%s %s sets %s, which `handoff %s` does not read", kind, name(obj), n, args[0])
					}
				}
			}
		}
	}
	if containers < 3 {
		t.Errorf("found %d containers, want worker, gateway and setup", containers)
	}
	// ConfigMap keys reach several subcommands through envFrom, and the
	// example Secret's keys through secretKeyRef: each must be read by one.
	for _, kind := range []string{"ConfigMap", "Secret"} {
		for _, obj := range docs[kind] {
			if name(obj) == "handoff-nats" || name(obj) == "handoff-google-chat" {
				continue // file names, mounted (handoff-nats: TestNATSCredentialsComeFromASecret)
			}
			data := asMap(obj["data"])
			if data == nil {
				data = asMap(obj["stringData"])
			}
			if len(data) == 0 {
				t.Errorf("%s %s has no data", kind, name(obj))
			}
			for k := range data {
				if !knownToAny(t, k) {
					t.Errorf("%s %s has key %s, which no handoff subcommand reads", kind, name(obj), k)
				}
			}
		}
	}
}

// definedMetrics greps the Go sources for metric names: literal ones, and
// those of package ordered, which names its metrics
// handoff_<subsystem>_<name> for each consumer's Subsystem.
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`Name:\s*"(handoff_[a-z0-9_]+)"`)
	orderedRe := regexp.MustCompile(`(?:opts|hist)\("([a-z0-9_]+)"`)
	subsystemRe := regexp.MustCompile(`Subsystem:\s*"([a-z0-9_]+)"`)
	var generic, subsystems []string
	defined := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			defined[m[1]] = true
		}
		if filepath.Base(filepath.Dir(p)) == "ordered" {
			for _, m := range orderedRe.FindAllStringSubmatch(string(b), -1) {
				generic = append(generic, m[1])
			}
		}
		for _, m := range subsystemRe.FindAllStringSubmatch(string(b), -1) {
			subsystems = append(subsystems, m[1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range subsystems {
		for _, name := range generic {
			defined["handoff_"+sub+"_"+name] = true
		}
	}
	if len(defined) < 15 {
		t.Fatalf("found only %d metric definitions: %v", len(defined), defined)
	}
	return defined
}

// notYetExported may be referenced by the dashboard before the code exports
// it; its panel stays empty until then.
var notYetExported = map[string]bool{"handoff_conversations": true}

func TestReferencedMetricsExist(t *testing.T) {
	defined := definedMetrics(t)
	// handoff_ followed by a metric name; recording rules (handoff:...) do
	// not match because of the colon.
	re := regexp.MustCompile(`\bhandoff_[a-z0-9_]+`)
	for _, p := range []string{"prometheus/rules.yml", "prometheus/rules_test.yml", "grafana/dashboards/handoff.json", "kubernetes/worker-hpa-external.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, ref := range re.FindAllString(string(b), -1) {
			seen++
			base := ref
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if s, ok := strings.CutSuffix(ref, suf); ok && defined[s] {
					base = s
				}
			}
			switch {
			case defined[base]:
			case notYetExported[base] && strings.HasSuffix(p, ".json"):
				t.Logf("%s references %s, not exported yet", p, base)
			default:
				t.Errorf("%s references %s, which no Go source defines", p, ref)
			}
		}
		if seen == 0 {
			t.Errorf("%s references no handoff metric", p)
		}
	}
}

func TestScalersWatchTheWorkerConsumer(t *testing.T) {
	docs := kubeDocs(t)
	if len(docs["ScaledObject"]) != 1 {
		t.Fatalf("want one ScaledObject, got %d", len(docs["ScaledObject"]))
	}
	so := docs["ScaledObject"][0]
	trig := asList(asMap(so["spec"])["triggers"])
	if len(trig) != 1 {
		t.Fatalf("want one trigger, got %d", len(trig))
	}
	md := asMap(asMap(trig[0])["metadata"])
	if got := asString(asMap(trig[0])["type"]); got != "nats-jetstream" {
		t.Errorf("trigger type %q", got)
	}
	if md["stream"] != stream.InStream || md["consumer"] != stream.Consumer || md["account"] != "$G" {
		t.Errorf("trigger watches stream %v consumer %v account %v; the workers use %s/%s", md["stream"], md["consumer"], md["account"], stream.InStream, stream.Consumer)
	}
	for _, k := range []string{"natsServerMonitoringEndpoint", "lagThreshold"} {
		if asString(md[k]) == "" {
			t.Errorf("trigger metadata %s missing (must be a string)", k)
		}
	}
	target := asString(asMap(asMap(so["spec"])["scaleTargetRef"])["name"])
	found := false
	for _, d := range docs["Deployment"] {
		found = found || name(d) == target
	}
	if !found {
		t.Errorf("ScaledObject targets %q, which is no Deployment here", target)
	}
}

// seconds reads a YAML number or Go duration string.
func seconds(t *testing.T, v any) time.Duration {
	t.Helper()
	switch v := v.(type) {
	case int:
		return time.Duration(v) * time.Second
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		return d
	}
	t.Fatalf("not a duration: %#v", v)
	return 0
}

// A pod killed before its shutdown timeout cuts off in-flight events; they
// are redelivered (not lost) but only after the ack wait.
func TestGracePeriodsExceedShutdownTimeouts(t *testing.T) {
	docs := kubeDocs(t)
	cm := asMap(docs["ConfigMap"][0]["data"])
	workerTimeout := worker.DefaultConfig().ShutdownTimeout
	if v, ok := cm["HANDOFF_SHUTDOWN_TIMEOUT"]; ok {
		workerTimeout = seconds(t, v)
	}
	gatewayTimeout := seconds(t, cm["HANDOFF_GATEWAY_SHUTDOWN_TIMEOUT"])
	for _, d := range docs["Deployment"] {
		grace := seconds(t, podSpec(d)["terminationGracePeriodSeconds"])
		want := map[string]time.Duration{"handoff-worker": workerTimeout, "handoff-gateway": gatewayTimeout}[name(d)]
		if want == 0 {
			t.Errorf("unexpected Deployment %s", name(d))
			continue
		}
		if grace <= want {
			t.Errorf("%s: terminationGracePeriodSeconds %v is not above its shutdown timeout %v", name(d), grace, want)
		}
	}

	compose := decodeAll(t, filepath.Join(root, "docker-compose.yml"))[0]
	for _, svc := range []string{"worker", "gateway"} {
		s := asMap(asMap(compose["services"])[svc])
		env := asMap(s["environment"])
		key := map[string]string{"worker": "HANDOFF_SHUTDOWN_TIMEOUT", "gateway": "HANDOFF_GATEWAY_SHUTDOWN_TIMEOUT"}[svc]
		if seconds(t, s["stop_grace_period"]) <= seconds(t, env[key]) {
			t.Errorf("compose %s: stop_grace_period %v is not above %s %v", svc, s["stop_grace_period"], key, env[key])
		}
	}
}

func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/dashboards/handoff.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID           string `json:"uid"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct{ Name, Type string } `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q schemaVersion %d", d.UID, d.SchemaVersion)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		hasDS = hasDS || (v.Name == "datasource" && v.Type == "datasource")
	}
	if !hasDS {
		t.Error("no datasource variable: the dashboard would be tied to one Prometheus")
	}
	ids := map[int]bool{}
	var titles []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		titles = append(titles, p.Title)
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if strings.Count(q.Expr, "(") != strings.Count(q.Expr, ")") {
				t.Errorf("panel %q: unbalanced parentheses in %s", p.Title, q.Expr)
			}
		}
	}
	sort.Strings(titles)
	t.Logf("%d panels: %s", len(titles), strings.Join(titles, "; "))
}

func TestKustomizeBuilds(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not on PATH")
	}
	out, err := exec.Command(kubectl, "kustomize", "kubernetes").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "\nkind: "); n < 10 {
		t.Errorf("kustomize rendered %d objects:\n%s", n, out)
	}
}

// promtool comes from Debian's prometheus package; .ci/run installs it.
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH (bash .ci/run installs it)")
	}
	for _, args := range [][]string{
		{"check", "rules", "rules.yml"},
		{"test", "rules", "rules_test.yml"},
		{"check", "config", "prometheus.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// Every port compose publishes is on the host's loopback: NATS and the
// simulator accept anyone who reaches them, and Grafana has a default
// password.
func TestComposePublishesOnLoopbackOnly(t *testing.T) {
	doc := decodeAll(t, filepath.Join(root, "docker-compose.yml"))[0]
	published := 0
	for name, svc := range asMap(doc["services"]) {
		for _, p := range asList(asMap(svc)["ports"]) {
			published++
			if s := asString(p); !strings.HasPrefix(s, "127.0.0.1:") {
				t.Errorf("compose service %s publishes %q: bind it to 127.0.0.1", name, s)
			}
		}
	}
	if published < 5 {
		t.Errorf("found %d published ports: is the compose file still read right?", published)
	}
}

// Compose writes down no credential that opens the gateway or Redis: each
// comes from .env and compose refuses to start without it (${VAR:?...}), so
// no installation shares a key with every other one.
func TestComposeHasNoFixedSecrets(t *testing.T) {
	doc := decodeAll(t, filepath.Join(root, "docker-compose.yml"))[0]
	required := regexp.MustCompile(`^\$\{[A-Z0-9_]+:\?[^}]+\}$`)
	secret := map[string]bool{
		"HANDOFF_GATEWAY_API_KEYS": true, "HANDOFF_GATEWAY_LIVECHAT_WEBHOOK_SECRET": true,
		"HANDOFF_GATEWAY_DIALOGFLOW_PASSWORD": true, "HANDOFF_GATEWAY_DIALOGFLOW_HEADER_VALUE": true,
		"REDISCLI_AUTH": true,
	}
	services := asMap(doc["services"])
	checked, redisClients := 0, 0
	for name, svc := range services {
		for k, v := range asMap(asMap(svc)["environment"]) {
			val := asString(v)
			switch {
			case secret[k]:
				checked++
				if !required.MatchString(val) {
					t.Errorf("compose service %s: %s=%q; want ${VAR:?message}, a value .env must give", name, k, val)
				}
			case k == "REDIS_URL":
				redisClients++
				if !strings.Contains(val, ":${REDIS_PASSWORD:?") {
					t.Errorf("compose service %s: REDIS_URL %q does not carry the required REDIS_PASSWORD", name, val)
				}
			}
		}
	}
	if checked < 4 || redisClients < 2 {
		t.Errorf("checked %d secrets and %d Redis clients: is the compose file still read right?", checked, redisClients)
	}
	redis := asMap(services["redis"])
	if cmd := fmt.Sprint(redis["command"]); !strings.Contains(cmd, "requirepass") || strings.Contains(cmd, "${REDIS_PASSWORD") {
		t.Errorf("redis command %s: want requirepass from the environment, not on the command line", cmd)
	}
}

// The Deployments and Job that talk to NATS get its credential files from a
// Secret mounted read-only, and the ConfigMap only points at files there.
func TestNATSCredentialsComeFromASecret(t *testing.T) {
	const dir = "/etc/handoff/nats/"
	docs := kubeDocs(t)
	var natsSecret map[string]any
	for _, s := range docs["Secret"] {
		if name(s) == "handoff-nats" {
			natsSecret = asMap(s["stringData"])
		}
	}
	if len(natsSecret) == 0 {
		t.Fatal("secret.example.yaml has no handoff-nats Secret with stringData")
	}
	cm := asMap(docs["ConfigMap"][0]["data"])
	if u := asString(cm["NATS_URL"]); strings.Contains(u, "@") {
		t.Errorf("NATS_URL %q carries credentials in a ConfigMap", u)
	}
	for _, k := range []string{"NATS_CREDS", "NATS_NKEY", "NATS_CERT", "NATS_KEY", "NATS_CA"} {
		v, ok := cm[k]
		if !ok {
			t.Errorf("ConfigMap lacks %s (empty is fine: the operator fills it in)", k)
			continue
		}
		if p := asString(v); p != "" {
			if !strings.HasPrefix(p, dir) || natsSecret[strings.TrimPrefix(p, dir)] == nil {
				t.Errorf("ConfigMap %s=%q is not a key of handoff-nats mounted at %s", k, p, dir)
			}
		}
	}
	pods := 0
	for _, kind := range []string{"Deployment", "Job"} {
		for _, obj := range docs[kind] {
			spec := podSpec(obj)
			vols := map[string]string{}
			for _, v := range asList(spec["volumes"]) {
				v := asMap(v)
				if s := asMap(v["secret"]); s != nil {
					vols[asString(v["name"])] = asString(s["secretName"])
				}
			}
			for _, c := range asList(spec["containers"]) {
				c := asMap(c)
				if !knownTo(t, asString(asList(c["args"])[0]))["NATS_URL"] {
					continue
				}
				pods++
				mounted := false
				for _, m := range asList(c["volumeMounts"]) {
					m := asMap(m)
					if asString(m["mountPath"])+"/" == dir && vols[asString(m["name"])] == "handoff-nats" && m["readOnly"] == true {
						mounted = true
					}
				}
				if !mounted {
					t.Errorf("%s %s talks to NATS but does not mount Secret handoff-nats read-only at %s", kind, name(obj), dir)
				}
			}
		}
	}
	if pods < 3 {
		t.Errorf("found %d pods that talk to NATS, want gateway, worker and setup", pods)
	}
}

// selects reports whether a matchLabels selector selects labels.
func selects(selector, labels map[string]any) bool {
	for k, v := range asMap(selector["matchLabels"]) {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// namespacePort splits a URL's host into its Kubernetes namespace (the second
// label of svc.cluster.local names) and port.
func namespacePort(t *testing.T, raw string) (string, int) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	labels := strings.Split(u.Hostname(), ".")
	if len(labels) < 3 || labels[2] != "svc" {
		t.Fatalf("%s: not a Service name (name.namespace.svc...)", raw)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("%s: no port", raw)
	}
	return labels[1], port
}

// The NetworkPolicies cover every pod, let in only the ingress controller
// (gateway) and Prometheus (metrics), and let out NATS and Redis where
// NATS_URL and REDIS_URL say they are.
func TestNetworkPolicies(t *testing.T) {
	docs := kubeDocs(t)
	cm := asMap(docs["ConfigMap"][0]["data"])
	var redisURL string
	for _, s := range docs["Secret"] {
		if name(s) == "handoff-secrets" {
			redisURL = asString(asMap(s["stringData"])["REDIS_URL"])
		}
	}
	natsNS, natsPort := namespacePort(t, asString(cm["NATS_URL"]))
	redisNS, redisPort := namespacePort(t, redisURL)

	type peer struct {
		namespace string
		port      any
	}
	var policies []map[string]any
	for _, p := range docs["NetworkPolicy"] {
		if asString(asMap(p["metadata"])["namespace"]) == "" { // ours, not the datastores' example
			policies = append(policies, p)
		}
	}
	rules := func(p map[string]any, dir, side string) []peer {
		var out []peer
		for _, r := range asList(asMap(p["spec"])[dir]) {
			r := asMap(r)
			for _, from := range asList(r[side]) {
				ns := asString(asMap(asMap(asMap(from)["namespaceSelector"])["matchLabels"])["kubernetes.io/metadata.name"])
				if cidr := asString(asMap(asMap(from)["ipBlock"])["cidr"]); cidr != "" {
					ns = cidr
				}
				for _, port := range asList(r["ports"]) {
					out = append(out, peer{ns, asMap(port)["port"]})
				}
			}
		}
		return out
	}
	want := map[string]struct {
		ingress []peer
		nats    bool
		redis   bool
	}{
		"gateway": {ingress: []peer{{"ingress-nginx", "http"}, {"monitoring", "metrics"}}, nats: true, redis: true},
		"worker":  {ingress: []peer{{"monitoring", "metrics"}}, nats: true, redis: true},
		"setup":   {nats: true},
	}
	for _, kind := range []string{"Deployment", "Job"} {
		for _, obj := range docs[kind] {
			tmpl := asMap(asMap(obj["spec"])["template"])
			labels := asMap(asMap(tmpl["metadata"])["labels"])
			component := asString(labels["app.kubernetes.io/component"])
			w, ok := want[component]
			if !ok {
				t.Errorf("%s %s: no expectation for component %q", kind, name(obj), component)
				continue
			}
			ports := map[any]bool{}
			for _, c := range asList(podSpec(obj)["containers"]) {
				for _, p := range asList(asMap(c)["ports"]) {
					ports[asMap(p)["name"]] = true
				}
			}
			var ingress, egress []peer
			denied := false
			for _, p := range policies {
				spec := asMap(p["spec"])
				if !selects(asMap(spec["podSelector"]), labels) {
					continue
				}
				types := fmt.Sprint(spec["policyTypes"])
				denied = denied || (strings.Contains(types, "Ingress") && strings.Contains(types, "Egress"))
				ingress = append(ingress, rules(p, "ingress", "from")...)
				egress = append(egress, rules(p, "egress", "to")...)
			}
			if !denied {
				t.Errorf("%s %s: no NetworkPolicy restricts both its ingress and egress", kind, name(obj))
			}
			if fmt.Sprint(ingress) != fmt.Sprint(w.ingress) {
				t.Errorf("%s %s: ingress allowed from %v, want %v", kind, name(obj), ingress, w.ingress)
			}
			for _, in := range ingress {
				if !ports[in.port] {
					t.Errorf("%s %s: ingress on port %v, which the container does not name", kind, name(obj), in.port)
				}
			}
			has := func(p peer) bool {
				for _, e := range egress {
					if e == p {
						return true
					}
				}
				return false
			}
			if has(peer{natsNS, natsPort}) != w.nats {
				t.Errorf("%s %s: egress to NATS (%s:%d, from NATS_URL) allowed=%v, want %v", kind, name(obj), natsNS, natsPort, !w.nats, w.nats)
			}
			if has(peer{redisNS, redisPort}) != w.redis {
				t.Errorf("%s %s: egress to Redis (%s:%d, from REDIS_URL) allowed=%v, want %v", kind, name(obj), redisNS, redisPort, !w.redis, w.redis)
			}
			delete(want, component)
		}
	}
	if len(want) > 0 {
		t.Errorf("no pod for components %v", want)
	}
}
