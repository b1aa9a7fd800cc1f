package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/livechat"
)

// refreshTokenValue is where the refresh token is kept in the store with
// `livechat login --save store`; the worker reads it from there.
const refreshTokenValue = "livechat:refresh_token"

// defaultRefreshTokenFile is where `livechat login` saves the refresh token
// and the worker looks for it when none is configured.
func defaultRefreshTokenFile() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ".handoff/livechat-refresh-token"
	}
	return filepath.Join(dir, "handoff", "livechat-refresh-token")
}

// loginStdin is where a pasted code is read from; tests replace it.
var loginStdin io.Reader = os.Stdin

func runLiveChat(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "login" {
		return runLiveChatLogin(ctx, args[1:], stdout)
	}
	fmt.Fprintf(stdout, "Usage: handoff livechat login [flags]\n\n  login  authorize the LiveChat app and keep its refresh token for the worker\n")
	if len(args) == 0 || args[0] == "--help" || args[0] == "-h" || args[0] == "help" {
		return errHelp
	}
	return usageError{fmt.Errorf("livechat: unknown subcommand %q", args[0])}
}

func runLiveChatLogin(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		lg          logging
		n           natsFlags
		sf          storeFlags
		accounts    string
		clientID    string
		secret      string
		redirectURI string
		save        string
		file        string
		noBrowser   bool
		timeout     time.Duration
	)
	f := newFlags("livechat login", "[flags]", "Authorize the team's LiveChat server-side app (OAuth authorization code flow\nwith PKCE) and keep its refresh token where the worker reads it. Prints the\nauthorize URL (and opens it when a browser is there); an administrator allows\nthe app, and LiveChat redirects to --redirect-uri, which this command serves\nwhen it is on this machine. Otherwise paste the URL LiveChat redirected to (or\nits code) here. Stops, naming them, when the app lacks a scope the worker or\nsetup needs. See docs/livechat-setup.md.")
	lg.register(f)
	f.String(&accounts, "livechat-accounts-url", "LIVECHAT_ACCOUNTS_URL", livechat.DefaultAccountsURL, "LiveChat accounts base URL (authorize page and /v2/token)")
	f.String(&clientID, "livechat-client-id", "LIVECHAT_CLIENT_ID", "", "client ID of the LiveChat server-side app (required)")
	f.String(&secret, "livechat-client-secret", "LIVECHAT_CLIENT_SECRET", "", "client secret of the app (prefer the environment variable; required)")
	f.String(&redirectURI, "redirect-uri", "LIVECHAT_REDIRECT_URI", "http://127.0.0.1:8765/callback", "redirect URI registered in the app; served here when its host is this machine")
	f.String(&save, "save", "HANDOFF_LOGIN_SAVE", "file", "where to keep the refresh token: file (--refresh-token-file, mode 0600), store (the --store backend), or print (a kubectl command for a Secret)")
	f.String(&file, "refresh-token-file", "LIVECHAT_REFRESH_TOKEN_FILE", defaultRefreshTokenFile(), "file the refresh token is written to with --save file (the worker reads the same variable)")
	f.Bool(&noBrowser, "no-browser", "", false, "only print the authorize URL, do not open a browser")
	f.Duration(&timeout, "timeout", "", 10*time.Minute, "how long to wait for the authorization")
	n.register(f, false)
	sf.register(f, false)
	if err := f.parse(args, stdout); err != nil {
		return err
	}
	log, err := lg.logger()
	if err != nil {
		return err
	}
	if clientID == "" || secret == "" {
		return usageError{errors.New("livechat login: --livechat-client-id and --livechat-client-secret (LIVECHAT_CLIENT_SECRET) are required")}
	}
	if save != "file" && save != "store" && save != "print" {
		return usageError{fmt.Errorf("livechat login: --save %q: want file, store or print", save)}
	}
	ru, err := url.Parse(redirectURI)
	if err != nil || ru.Scheme == "" || ru.Host == "" {
		return usageError{fmt.Errorf("livechat login: --redirect-uri %q is not an absolute URL", redirectURI)}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	state, verifier := rand.Text(), rand.Text()+rand.Text()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {clientID},
		"redirect_uri":          {redirectURI},
		"state":                 {state},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
	}
	authorize := strings.TrimRight(accounts, "/") + "/?" + q.Encode()

	got := make(chan callback, 2)
	if local(ru.Hostname()) {
		stop, err := serveCallback(ru, got)
		if err != nil {
			log.Warn("cannot serve the redirect URI here; paste the URL LiveChat redirects to instead", "err", err)
		} else {
			defer stop()
		}
	}
	go readPasted(loginStdin, got)
	fmt.Fprintf(stdout, "Open this URL as a LiveChat administrator and allow the app:\n\n  %s\n\nWaiting for the redirect to %s (or paste the URL it redirected to, or its code, and press Enter)...\n", authorize, redirectURI)
	if !noBrowser {
		openBrowser(authorize)
	}
	var cb callback
	select {
	case cb = <-got:
	case <-ctx.Done():
		return fmt.Errorf("livechat login: no authorization within %v", timeout)
	}
	if cb.err != "" {
		return fmt.Errorf("livechat login: LiveChat refused the authorization: %s", cb.err)
	}
	// A pasted bare code carries no state; PKCE still ties it to this run.
	if cb.hasState && subtle.ConstantTimeCompare([]byte(cb.state), []byte(state)) != 1 {
		return errors.New("livechat login: the state parameter of the redirect does not match this login: refusing the code (a stale or forged redirect); run the login again")
	}

	lc := livechat.New(livechat.Config{AccountsURL: accounts, ClientID: clientID, ClientSecret: secret, Logger: log})
	tok, err := lc.ExchangeCode(ctx, cb.code, redirectURI, verifier)
	if err != nil {
		return fmt.Errorf("livechat login: exchange the code at /v2/token: %w", err)
	}
	if tok.RefreshToken == "" {
		return errors.New("livechat login: LiveChat's token answer has no refresh_token: is the app a server-side app?")
	}
	var missing []string
	for _, need := range []struct {
		who    string
		scopes []string
	}{{"worker", livechat.WorkerScopes}, {"setup", livechat.SetupScopes}} {
		for _, s := range livechat.MissingScopes(tok.Scopes, need.scopes) {
			missing = append(missing, s+" (for "+need.who+")")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("livechat login: the app was granted %q but lacks %s: add them to the app's Authorization building block in LiveChat's Developer Console, then run the login again; nothing was saved",
			strings.Join(tok.Scopes, ","), strings.Join(missing, ", "))
	}

	switch save {
	case "file":
		if err := writeSecretFile(file, tok.RefreshToken); err != nil {
			return fmt.Errorf("livechat login: %w", err)
		}
		fmt.Fprintf(stdout, "Logged in. The refresh token is in %s (mode 0600); the worker reads it from LIVECHAT_REFRESH_TOKEN_FILE=%s.\n", file, file)
	case "store":
		st, err := sf.open(ctx, &n, "handoff-login", log)
		if err != nil {
			return fmt.Errorf("livechat login: %w", err)
		}
		defer st.Close()
		if err := st.SetValue(ctx, refreshTokenValue, tok.RefreshToken, 0); err != nil {
			return fmt.Errorf("livechat login: %w", err)
		}
		fmt.Fprintf(stdout, "Logged in. The refresh token is in the store (%s); workers on the same store read it when LIVECHAT_REFRESH_TOKEN is not set.\n", sf.backend)
	case "print":
		fmt.Fprintf(stdout, "Logged in. Keep the refresh token in a Secret (it is printed once, here):\n\n  kubectl create secret generic handoff-livechat --from-literal=LIVECHAT_REFRESH_TOKEN='%s'\n", tok.RefreshToken)
	}
	return nil
}

// callback is what the redirect (or a paste) brought back.
type callback struct {
	code, state, err string
	hasState         bool
}

func local(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serveCallback takes the redirect on the redirect URI's port and path.
func serveCallback(ru *url.URL, got chan<- callback) (stop func(), err error) {
	port := ru.Port()
	if port == "" {
		port = "80"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ru.Hostname(), port))
	if err != nil {
		return nil, err
	}
	path := ru.Path
	if path == "" {
		path = "/"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
		cb := fromQuery(r.URL.Query())
		if cb.code == "" && cb.err == "" {
			http.Error(w, "no code in this request", http.StatusBadRequest)
			return
		}
		select {
		case got <- cb:
		default:
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "handoff: authorization received; you can close this tab and return to the terminal.")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

func fromQuery(q url.Values) callback {
	cb := callback{code: q.Get("code"), err: q.Get("error")}
	if d := q.Get("error_description"); d != "" {
		cb.err += ": " + d
	}
	cb.state, cb.hasState = q.Get("state"), q.Has("state")
	return cb
}

// readPasted takes a pasted redirect URL or bare code from r.
func readPasted(r io.Reader, got chan<- callback) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" {
			continue
		}
		cb := callback{code: line}
		if u, err := url.Parse(line); err == nil && u.RawQuery != "" {
			cb = fromQuery(u.Query())
		}
		if cb.code != "" || cb.err != "" {
			got <- cb
			return
		}
	}
}

// openBrowser opens u when a desktop is there; a failure is fine (the URL
// is printed).
func openBrowser(u string) {
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return
	}
	if bin, err := exec.LookPath("xdg-open"); err == nil {
		_ = exec.Command(bin, u).Start()
	}
}

// writeSecretFile writes v to path with mode 0600, creating the directory
// (0700), through a temporary file so a reader never sees half a token.
func writeSecretFile(path, v string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".refresh-token-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(v + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
