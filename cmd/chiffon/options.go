package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// errUsage marks a bad flag, environment variable or config-file value: the
// command prints it and exits 2.
var errUsage = errors.New("usage")

// option is one setting that a flag, a CHIFFON_* environment variable and a
// config-file key can all give. Precedence: flag > env > file > default.
type option struct {
	name   string // flag name; env is CHIFFON_<NAME> with '-' → '_'
	usage  string
	def    string
	isBool bool
	repeat bool // a list: the flag may repeat; env and file give several
	set    func(string) error
	reset  func() // for lists: forget the values of a lower layer
}

// options collects a command's settings and layers them.
type options struct {
	list []*option
	// raw holds what the command line gave, by flag name, in order.
	raw map[string][]string
}

func (o *options) add(op *option) { o.list = append(o.list, op) }

func (o *options) str(p *string, name, usage string) {
	o.add(&option{name: name, usage: usage, def: *p, set: func(s string) error { *p = s; return nil }})
}

func (o *options) boolean(p *bool, name, usage string) {
	o.add(&option{name: name, usage: usage, def: strconv.FormatBool(*p), isBool: true, set: func(s string) error {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false")
		}
		*p = v
		return nil
	}})
}

func (o *options) duration(p *time.Duration, name, usage string) {
	o.add(&option{name: name, usage: usage, def: p.String(), set: func(s string) error {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("want a duration such as 500ms, 30s or 5m")
		}
		if v < 0 {
			return fmt.Errorf("must not be negative")
		}
		*p = v
		return nil
	}})
}

func (o *options) integer(p *int, name, usage string) {
	o.add(&option{name: name, usage: usage, def: strconv.Itoa(*p), set: func(s string) error {
		v, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("want a whole number")
		}
		if v < 0 {
			return fmt.Errorf("must not be negative")
		}
		*p = v
		return nil
	}})
}

// gigabytes is a size in GB: a finite number, not negative.
func (o *options) gigabytes(p *float64, name, usage string) {
	o.add(&option{name: name, usage: usage, def: strconv.FormatFloat(*p, 'f', -1, 64), set: func(s string) error {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("want a number of GB such as 2 or 0.5")
		}
		if v < 0 {
			return fmt.Errorf("must not be negative")
		}
		*p = v
		return nil
	}})
}

// strList is a repeatable flag; each value may also hold comma-separated items.
func (o *options) strList(p *[]string, name, usage string) {
	o.add(&option{name: name, usage: usage, def: strings.Join(*p, ","), repeat: true,
		set: func(s string) error {
			for item := range strings.SplitSeq(s, ",") {
				if item = strings.TrimSpace(item); item != "" {
					*p = append(*p, item)
				}
			}
			return nil
		},
		reset: func() { *p = nil }})
}

func (o *options) lookup(name string) *option {
	for _, op := range o.list {
		if op.name == name {
			return op
		}
	}
	return nil
}

// recorder is the flag.Value that only records what the command line said,
// so layers can be applied in precedence order afterwards.
type recorder struct {
	o  *options
	op *option
}

func (r recorder) String() string {
	if r.op == nil {
		return ""
	}
	return r.op.def
}
func (r recorder) Set(s string) error {
	r.o.raw[r.op.name] = append(r.o.raw[r.op.name], s)
	return nil
}
func (r recorder) IsBoolFlag() bool { return r.op != nil && r.op.isBool }

// flagSet builds a Go flag.FlagSet over the options. Go's flag package takes
// -name=value and --name=value alike, as serf and Consul do.
func (o *options) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned and printed once by the command
	// The command prints the error itself, plus a pointer to -help; the flag
	// package's own usage dump would only repeat Help less well.
	fs.Usage = func() {}
	o.raw = map[string][]string{}
	for _, op := range o.list {
		fs.Var(recorder{o, op}, op.name, op.usage)
	}
	return fs
}

// envName is the environment variable for a flag name.
func envName(flagName string) string {
	return "CHIFFON_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// apply layers the config file (if any), the environment and the command
// line onto the targets, in that order, so later layers win.
func (o *options) apply(configFile string) error {
	if configFile != "" {
		if err := o.applyFile(configFile); err != nil {
			return err
		}
	}
	for _, op := range o.list {
		v, ok := os.LookupEnv(envName(op.name))
		if !ok || op.name == "config-file" {
			continue
		}
		if err := o.setAll(op, []string{v}, envName(op.name)); err != nil {
			return err
		}
	}
	for _, op := range o.list {
		if vals, ok := o.raw[op.name]; ok {
			if err := o.setAll(op, vals, "-"+op.name); err != nil {
				return err
			}
		}
	}
	return nil
}

func (o *options) setAll(op *option, vals []string, source string) error {
	if op.reset != nil {
		op.reset()
	}
	for _, v := range vals {
		if err := op.set(v); err != nil {
			return fmt.Errorf("%w: invalid value %q for %s: %v", errUsage, v, source, err)
		}
	}
	return nil
}

// applyFile reads a JSON config file whose keys are flag names (data-dir or
// data_dir). Values are strings, numbers, booleans, or arrays for lists.
func (o *options) applyFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: -config-file: %v", errUsage, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("%w: -config-file %s: not a JSON object: %v", errUsage, path, err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := strings.ReplaceAll(k, "_", "-")
		op := o.lookup(name)
		if op == nil || name == "config-file" {
			return fmt.Errorf("%w: -config-file %s: unknown key %q; allowed: %s", errUsage, path, k, o.names())
		}
		var vals []string
		switch v := m[k].(type) {
		case []any:
			if !op.repeat {
				return fmt.Errorf("%w: -config-file %s: %q takes one value, not a list", errUsage, path, k)
			}
			for _, e := range v {
				vals = append(vals, fmt.Sprint(e))
			}
		case map[string]any, nil:
			return fmt.Errorf("%w: -config-file %s: %q must be a string, number, boolean or list", errUsage, path, k)
		default:
			vals = []string{fmt.Sprint(v)}
		}
		if err := o.setAll(op, vals, fmt.Sprintf("%q in %s", k, path)); err != nil {
			return err
		}
	}
	return nil
}

func (o *options) names() string {
	var n []string
	for _, op := range o.list {
		if op.name != "config-file" {
			n = append(n, op.name)
		}
	}
	slices.Sort(n)
	return strings.Join(n, ", ")
}

// parse parses args, then layers file, env and flags, and returns the
// positional arguments. Flags may come before or after positional ones
// (`work status ID -http-addr X`), as in Consul's and serf's CLIs users
// expect; after "--" everything is positional. It returns errUsage
// (wrapped) for anything the user must fix.
func (o *options) parse(cmd string, args []string) ([]string, error) {
	fs := o.flagSet(cmd)
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v (see 'chiffon %s -help')", errUsage, err, cmd)
		}
		left := fs.Args()
		if used := len(args) - len(left); len(left) == 0 || used > 0 && args[used-1] == "--" {
			rest = append(rest, left...)
			break
		}
		// The flag package stops at the first positional argument: keep
		// it and go on parsing what follows.
		rest = append(rest, left[0])
		args = left[1:]
	}
	cf := os.Getenv(envName("config-file"))
	if v := o.raw["config-file"]; len(v) > 0 {
		cf = v[len(v)-1]
	}
	return rest, o.apply(cf)
}

// help renders the options for a command's Help text.
func (o *options) help() string {
	var b strings.Builder
	for _, op := range o.list {
		def := ""
		if op.def != "" && op.def != "false" && op.def != "0" {
			def = fmt.Sprintf(" (default %s)", op.def)
		}
		rep := ""
		if op.repeat {
			rep = " (repeatable)"
		}
		fmt.Fprintf(&b, "  -%s%s%s\n      %s [%s]\n", op.name, rep, def, op.usage, envName(op.name))
	}
	return b.String()
}
