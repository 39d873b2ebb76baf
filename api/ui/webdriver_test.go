//go:build unix

package ui_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// Debian's Chromium and its matching ChromeDriver. The test drives them
// with the W3C WebDriver protocol (JSON over HTTP) so that the module needs
// no browser-automation dependency.
const (
	chromiumBin     = "/usr/bin/chromium"
	chromedriverBin = "/usr/bin/chromedriver"
	installHint     = "apt-get update && apt-get install -y chromium chromium-driver"
)

// chromiumArgs keep the browser headless, quiet and off the network.
var chromiumArgs = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
	"--disable-component-update", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
	"--window-size=1400,900",
}

// webElementKey is the W3C key of an element reference.
const webElementKey = "element-6066-11e4-a52e-4f735466cecf"

// browser is one WebDriver session in headless Chromium.
type browser struct {
	t    *testing.T
	base string // the session's URL on chromedriver
	http *http.Client
}

var driverPort = regexp.MustCompile(`started successfully on port (\d+)`)

// startBrowser starts chromedriver on a free port and a headless Chromium
// session with a fresh profile. Both end at cleanup. A missing browser is
// a failure, not a skip: the dashboard is tested in a real browser or not
// at all.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	for _, bin := range []string{chromiumBin, chromedriverBin} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("the dashboard test needs Chromium and ChromeDriver: %v; install them with: %s", err, installHint)
		}
	}
	// The browser's profile directory is made before the cleanup that
	// kills the browser is registered, so that (cleanups run last first)
	// it is removed only once nothing writes into it any more.
	profile := t.TempDir()
	cmd := exec.Command(chromedriverBin, "--port=0")
	// Its own process group, so that cleanup also ends the browser it
	// started if the session could not be closed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", chromedriverBin, err)
	}
	portCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := driverPort.FindStringSubmatch(sc.Text()); m != nil {
				portCh <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	b := &browser{t: t, http: &http.Client{Timeout: 30 * time.Second}}
	t.Cleanup(func() {
		if b.base != "" {
			b.call(http.MethodDelete, "", nil, nil)
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	select {
	case port := <-portCh:
		b.base = "http://127.0.0.1:" + port
	case <-time.After(10 * time.Second):
		t.Fatal("chromedriver did not say which port it listens on within 10 s")
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": chromiumBin,
			"args":   append(chromiumArgs, "--user-data-dir="+profile),
		},
	}}}
	var sess struct {
		SessionID string `json:"sessionId"`
	}
	driver := b.base
	b.base = ""
	if err := b.do(http.MethodPost, driver+"/session", caps, &sess); err != nil {
		t.Fatalf("new WebDriver session: %v", err)
	}
	b.base = driver + "/session/" + sess.SessionID
	return b
}

// do sends one WebDriver command and decodes its "value" into v.
func (b *browser) do(method, url string, body, v any) error {
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("%s %s: %s: decode: %w", method, url, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Message string }
		_ = json.Unmarshal(env.Value, &e)
		return fmt.Errorf("%s %s: %s: %s: %s", method, url, resp.Status, e.Error, e.Message)
	}
	if v != nil {
		return json.Unmarshal(env.Value, v)
	}
	return nil
}

// call is do on the session, failing the test on an error.
func (b *browser) call(method, path string, body, v any) {
	b.t.Helper()
	if err := b.do(method, b.base+path, body, v); err != nil {
		b.t.Fatal(err)
	}
}

// open navigates to url and waits for the page to load.
func (b *browser) open(url string) {
	b.t.Helper()
	b.call(http.MethodPost, "/url", map[string]string{"url": url}, nil)
}

// eval runs a script's body in the page and decodes what it returns.
func (b *browser) eval(script string, v any, args ...any) {
	b.t.Helper()
	if args == nil {
		args = []any{}
	}
	b.call(http.MethodPost, "/execute/sync", map[string]any{"script": script, "args": args}, v)
}

// element finds the element a CSS selector names.
func (b *browser) element(css string) string {
	b.t.Helper()
	var ref map[string]string
	b.call(http.MethodPost, "/element", map[string]string{"using": "css selector", "value": css}, &ref)
	return ref[webElementKey]
}

// typeInto types text into the element css names, as keystrokes.
func (b *browser) typeInto(css, text string) {
	b.t.Helper()
	b.call(http.MethodPost, "/element/"+b.element(css)+"/value", map[string]string{"text": text}, nil)
}

// click clicks the element css names.
func (b *browser) click(css string) {
	b.t.Helper()
	b.call(http.MethodPost, "/element/"+b.element(css)+"/click", map[string]any{}, nil)
}

// text returns the visible text of the page, for failure messages.
func (b *browser) text() string {
	var s string
	if err := b.do(http.MethodPost, b.base+"/execute/sync", map[string]any{"script": "return document.body.innerText", "args": []any{}}, &s); err != nil {
		return "(page text unavailable: " + err.Error() + ")"
	}
	return strings.TrimSpace(s)
}

// waitPage polls the page with script until ok accepts what it returns,
// and fails with the page's text after timeout.
func waitPage[T any](b *browser, timeout time.Duration, what, script string, ok func(T) bool) T {
	b.t.Helper()
	var v T
	if !testwait.Poll(50*time.Millisecond, timeout, func() bool { v = *new(T); b.eval(script, &v); return ok(v) }) {
		b.t.Fatalf("timed out after %s waiting for %s; last value %+v; the page reads:\n%s", timeout, what, v, b.text())
	}
	return v
}
