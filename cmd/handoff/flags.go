package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// flags is a flag.FlagSet whose every flag also reads an environment
// variable. The standard flag package is enough for a handful of
// subcommands; what it lacks (env fallback and a --help that names the
// variables) is the few lines below, so no CLI framework is pulled in.
type flags struct {
	fs      *flag.FlagSet
	summary string
	usage   string
	rows    []flagRow
	errs    []error
}

type flagRow struct{ name, env, def, help string }

func newFlags(name, usage, summary string) *flags {
	f := &flags{fs: flag.NewFlagSet(name, flag.ContinueOnError), summary: summary, usage: usage}
	f.fs.SetOutput(io.Discard)
	return f
}

func (f *flags) envOr(env, def string) string {
	if v, ok := os.LookupEnv(env); ok && env != "" {
		return v
	}
	return def
}

func (f *flags) row(name, env, def, help string) {
	f.rows = append(f.rows, flagRow{name, env, def, help})
}

func (f *flags) String(p *string, name, env, def, help string) {
	f.row(name, env, def, help)
	f.fs.StringVar(p, name, f.envOr(env, def), help)
}

func (f *flags) Int(p *int, name, env string, def int, help string) {
	f.row(name, env, strconv.Itoa(def), help)
	v := def
	if s := f.envOr(env, ""); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: not a whole number", env, s))
		}
		v = n
	}
	f.fs.IntVar(p, name, v, help)
}

func (f *flags) Int64(p *int64, name, env string, def int64, help string) {
	f.row(name, env, strconv.FormatInt(def, 10), help)
	v := def
	if s := f.envOr(env, ""); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: not a whole number", env, s))
		}
		v = n
	}
	f.fs.Int64Var(p, name, v, help)
}

func (f *flags) Duration(p *time.Duration, name, env string, def time.Duration, help string) {
	f.row(name, env, def.String(), help)
	v := def
	if s := f.envOr(env, ""); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: not a duration (like 30s or 5m)", env, s))
		}
		v = d
	}
	f.fs.DurationVar(p, name, v, help)
}

func (f *flags) Bool(p *bool, name, env string, def bool, help string) {
	f.row(name, env, strconv.FormatBool(def), help)
	v := def
	if s := f.envOr(env, ""); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: not true or false", env, s))
		}
		v = b
	}
	f.fs.BoolVar(p, name, v, help)
}

// Help writes the subcommand's usage, listing every flag with its
// environment variable and default.
func (f *flags) Help(w io.Writer) {
	fmt.Fprintf(w, "Usage: handoff %s %s\n\n%s\n\nFlags (each also read from the environment variable shown):\n", f.fs.Name(), f.usage, f.summary)
	for _, r := range f.rows {
		env := ""
		if r.env != "" {
			env = " [$" + r.env + "]"
		}
		def := ""
		if r.def != "" {
			def = fmt.Sprintf(" (default %q)", r.def)
		}
		fmt.Fprintf(w, "  --%s%s\n      %s%s\n", r.name, env, r.help, def)
	}
}

// errHelp is returned by parse after printing help; main exits 0 for it.
var errHelp = errors.New("help requested")

// usageError marks a bad command line; main exits 2 for it.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func (f *flags) parse(args []string, stdout io.Writer) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.Help(stdout)
			return errHelp
		}
		return usageError{fmt.Errorf("%s: %w (see handoff %s --help)", f.fs.Name(), err, f.fs.Name())}
	}
	if len(f.errs) > 0 {
		return usageError{fmt.Errorf("%s: %w", f.fs.Name(), errors.Join(f.errs...))}
	}
	if f.fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q (see handoff %s --help)", f.fs.Name(), f.fs.Arg(0), f.fs.Name())}
	}
	return nil
}

// logging holds the flags every long-running subcommand shares.
type logging struct {
	format   string
	level    string
	personal bool
}

func (l *logging) register(f *flags) {
	f.String(&l.format, "log-format", "HANDOFF_LOG_FORMAT", "text", "log format: text or json")
	f.String(&l.level, "log-level", "HANDOFF_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	f.Bool(&l.personal, "log-personal-data", "HANDOFF_LOG_PERSONAL_DATA", false, "log message texts, names and email addresses (redacted at every level otherwise)")
}

func (l *logging) logger() (*slog.Logger, error) { return l.loggerTo(os.Stderr) }

func (l *logging) loggerTo(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch strings.ToLower(l.format) {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, usageError{fmt.Errorf("--log-format %q: want text or json", l.format)}
	}
	if !l.personal {
		h = redactHandler{h}
	}
	return slog.New(h), nil
}
