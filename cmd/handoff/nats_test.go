package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// startSecureNATS runs a JetStream server that admits only clients passing
// the authentication that opts configures.
func startSecureNATS(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host = "127.0.0.1"
	opts.Port = testenv.FreePort(t)
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	opts.JetStreamMaxMemory, opts.JetStreamMaxStore = 64<<20, 8<<30 // streams reserve 1 GiB each
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", opts.Port)
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// pki makes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, and writes them as PEM files.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (certPath, keyPath string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return writeFile(t, dir, name+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
			writeFile(t, dir, name+".key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	}
	var p pki
	p.ca = writeFile(t, dir, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("handoff", 3, x509.ExtKeyUsageClientAuth)
	return p
}

// operatorCreds sets up operator (JWT) mode with one account that may use
// JetStream, and writes a user's creds file for it.
func operatorCreds(t *testing.T, opts *server.Options) string {
	t.Helper()
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	oclaims, _ := jwt.DecodeOperatorClaims(ojwt)

	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	syskp, _ := nkeys.CreateAccount()
	syspub, _ := syskp.PublicKey()
	sjwt, err := jwt.NewAccountClaims(syspub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	res := &server.MemAccResolver{}
	if err := res.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	if err := res.Store(syspub, sjwt); err != nil {
		t.Fatal(err)
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{oclaims}
	opts.AccountResolver = res
	opts.SystemAccount = syspub

	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.IssuerAccount = apub
	ujwt, err := uc.Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, t.TempDir(), "user.creds", creds)
}

// A NATS server that requires a credential admits `handoff setup` with that
// credential given through the environment (as a Kubernetes Secret mount
// does) and refuses it without.
func TestSetupAuthenticatesToNATS(t *testing.T) {
	cases := []struct {
		name   string
		server func(t *testing.T, o *server.Options) (env map[string]string)
	}{
		{"nkey", func(t *testing.T, o *server.Options) map[string]string {
			kp, _ := nkeys.CreateUser()
			pub, _ := kp.PublicKey()
			seed, _ := kp.Seed()
			o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
			return map[string]string{"NATS_NKEY": writeFile(t, t.TempDir(), "user.nk", seed)}
		}},
		{"creds", func(t *testing.T, o *server.Options) map[string]string {
			return map[string]string{"NATS_CREDS": operatorCreds(t, o)}
		}},
		{"mutual TLS", func(t *testing.T, o *server.Options) map[string]string {
			p := newPKI(t)
			cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.ca, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			cfg.MinVersion = tls.VersionTLS12
			o.TLSConfig, o.TLSVerify, o.TLS = cfg, true, true
			return map[string]string{"NATS_CA": p.ca, "NATS_CERT": p.clientCert, "NATS_KEY": p.clientKey}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := &server.Options{}
			env := c.server(t, opts)
			url := startSecureNATS(t, opts)

			code, out, errs := runCLI(t, "setup", "--nats-url", url)
			if code == 0 {
				t.Fatalf("setup without credentials succeeded against a server that requires them:\n%s", out)
			}
			for k, v := range env {
				t.Setenv(k, v)
			}
			code, out, errs = runCLI(t, "setup", "--nats-url", url)
			if code != 0 || strings.Count(out, "created") != 6 {
				t.Fatalf("setup with %v: code %d\n%s%s", env, code, out, errs)
			}
		})
	}
}

func TestNATSCredentialErrors(t *testing.T) {
	dir := t.TempDir()
	some := writeFile(t, dir, "some", []byte("x"))
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing creds file", []string{"--nats-creds", filepath.Join(dir, "nope.creds")}, "--nats-creds"},
		{"creds and nkey", []string{"--nats-creds", some, "--nats-nkey", some}, "give one"},
		{"cert without key", []string{"--nats-cert", some}, "go together"},
		{"missing CA", []string{"--nats-ca", filepath.Join(dir, "nope.pem")}, "--nats-ca"},
		{"bad nkey seed", []string{"--nats-nkey", some}, "--nats-nkey"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// 127.0.0.1:1 refuses at once: an error must come before any dial.
			code, _, errs := runCLI(t, append([]string{"setup", "--nats-url", "nats://127.0.0.1:1"}, c.args...)...)
			if code != 2 || !strings.Contains(errs, c.want) {
				t.Errorf("code %d (want 2), stderr %q (want it to mention %q)", code, errs, c.want)
			}
		})
	}
}

// A password in --nats-url must not reach the log through a dial error.
func TestNATSURLPasswordNotInErrors(t *testing.T) {
	code, out, errs := runCLI(t, "setup", "--nats-url", "nats://handoff:s3cret-pass@127.0.0.1:1")
	if code == 0 {
		t.Fatal("setup against a closed port succeeded")
	}
	if strings.Contains(out+errs, "s3cret-pass") {
		t.Errorf("the URL's password is in the output:\n%s%s", out, errs)
	}
}
