package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/browser"
	"github.com/cnaitoken/caddy-aitoken/internal/smtpcapture"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// screenshotsEnv, set to 1, makes TestBrowserCustomerJourney write the
// README's screenshots of the overview and the keys page into docs/img.
const screenshotsEnv = "AITOKEN_SCREENSHOTS"

// The mock provider's usage of one chat completion (see mockupstream) and
// what it costs at the test price of test-model (input 1.00, output 2.00
// per million tokens): 12×1 + 5×2 = 22 millionths.
const (
	callModel  = "test-model"
	callInput  = "12"
	callOutput = "5"
	callCost   = "0.000022"
)

// The top-up of the journey: a preset button of the billing page, and the
// balance after it and after the call.
const (
	topupAmount = "20.00"
	topupMinor  = 2000
	afterCall   = "19.999978" // 20.00 - callCost
)

// TestBrowserCustomerJourney walks one customer through the dashboard in a
// real headless chromium, from sign-up and the emailed verification link,
// through a top-up by Stripe Checkout (stripe-mock and a signed webhook),
// to the deletion of the account, with a billed API call made by the
// official OpenAI client in between. Every page is checked for console
// errors, CSP violations and cookies other than the session's; the
// signed-in pages are also checked on a phone's viewport.
func TestBrowserCustomerJourney(t *testing.T) {
	if env.stripeErr != nil {
		t.Fatalf("this test needs stripe-mock: %v", env.stripeErr)
	}
	mail := startMail(t, "")
	j := newJourney(t, browser.Start(t))

	j.signUp()
	j.keysRefused()
	j.verifyEmail(mail)
	j.signOut()
	j.signIn(j.b)
	j.topUp()
	secret := j.createKey("laptop")
	j.callAPI(secret)
	j.checkUsage()
	j.checkOverview()
	j.screenshots()
	j.checkPhone()
	j.redeemCode()
	j.downloadExport()
	j.deleteAccount()
	j.signInFails()
}

// journey is one customer's walk through the dashboard in b.
type journey struct {
	t               *testing.T
	b               *browser.Browser
	email, password string
	user            string // the user ID, once signed up
	// expected are the Problems a step causes on purpose.
	expected []string
}

func newJourney(t *testing.T, b *browser.Browser) *journey {
	return &journey{t: t, b: b, password: "correct horse battery",
		email: fmt.Sprintf("browser%d-%d@example.com", time.Now().UnixNano(), seq.Add(1))}
}

// visit loads a dashboard page in b and checks it (see checkPage).
func (j *journey) visit(b *browser.Browser, path string, signedIn bool) {
	j.t.Helper()
	b.Navigate(base + path)
	j.checkPage(b, path, signedIn)
}

// checkPage checks the page b shows: no console errors or CSP violations
// so far, and no cookie but the session's (none when signed out).
func (j *journey) checkPage(b *browser.Browser, what string, signedIn bool) {
	j.t.Helper()
	if csp := b.CSPViolations(); len(csp) > 0 {
		j.t.Fatalf("%s: CSP violations: %q", what, csp)
	}
	var problems []string
	for _, p := range b.Problems() {
		if !slices.Contains(j.expected, p) {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		j.t.Fatalf("%s: page problems: %q", what, problems)
	}
	cookies := b.Cookies()
	if !signedIn {
		if len(cookies) != 0 {
			j.t.Fatalf("%s: signed out, yet the browser holds cookies: %v", what, cookieNames(cookies))
		}
		return
	}
	if len(cookies) != 1 {
		j.t.Fatalf("%s: the browser holds %d cookies %v, want only the session's", what, len(cookies), cookieNames(cookies))
	}
	c := cookies[0]
	if c.Name != "aitoken_session" || !c.HTTPOnly || c.SameSite != network.CookieSameSiteLax {
		j.t.Fatalf("%s: cookie %s HttpOnly=%v SameSite=%q, want aitoken_session, HttpOnly, SameSite=Lax",
			what, c.Name, c.HTTPOnly, c.SameSite)
	}
}

func cookieNames(cs []*network.Cookie) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// submit clicks the submit button of the form posting to path and checks
// the page it leads to.
func (j *journey) submit(b *browser.Browser, path string, signedIn bool) {
	j.t.Helper()
	b.Submit(`form[action="/dashboard` + path + `"] button[type="submit"]`)
	j.checkPage(b, "POST "+path, signedIn)
}

func (j *journey) signUp() {
	j.t.Helper()
	j.visit(j.b, "/signup", false)
	j.b.Fill("email", j.email)
	j.b.Fill("password", j.password)
	j.b.Fill("name", "Ada Browser")
	j.b.Click("#adult")
	// With mail, sign-up answers a known and a new email alike: it signs
	// nobody in, and says a message was sent.
	j.submit(j.b, "/signup", false)
	if loc := j.b.Location(); loc != base+"/login?sent=1" {
		j.t.Fatalf("after sign-up the browser is at %s, want the sign-in page", loc)
	}
	if text := j.b.Text("main"); !strings.Contains(text, "We sent a message") {
		j.t.Fatalf("after sign-up the page says %q", text)
	}
	j.user = userOf(j.t, j.email)
	j.signIn(j.b)
}

func (j *journey) signOut() {
	j.t.Helper()
	j.submit(j.b, "/logout", false)
	if loc := j.b.Location(); loc != base+"/login" {
		j.t.Fatalf("after sign-out the browser is at %s, want the sign-in page", loc)
	}
}

// signIn signs in with the form of the sign-in page, in b.
func (j *journey) signIn(b *browser.Browser) {
	j.t.Helper()
	j.visit(b, "/login", false)
	b.Fill("email", j.email)
	b.Fill("password", j.password)
	j.submit(b, "/login", true)
	if loc := b.Location(); loc != base+"/" {
		j.t.Fatalf("after sign-in the browser is at %s, want the overview", loc)
	}
}

// keysRefused checks that the keys page of an unverified account offers
// no key but the verification link again, and that a post minting one
// anyway is refused.
func (j *journey) keysRefused() {
	j.t.Helper()
	j.visit(j.b, "/keys", true)
	if text := j.b.Text("main"); !strings.Contains(text, "first verify your email") {
		j.t.Fatalf("the keys page of an unverified account says %q", text)
	}
	if n := browser.Eval[int](j.b, `document.querySelectorAll('form[action="/dashboard/keys"]').length`); n != 0 {
		j.t.Fatal("the keys page of an unverified account offers to create a key")
	}
	// The 403 is the point, and the browser logs it.
	j.expected = append(j.expected, "network: Failed to load resource: the server responded with a status of 403 (Forbidden) ("+base+"/keys)")
	st := browser.Eval[int](j.b, `fetch("`+base+`/keys", {method: "POST",
		body: new URLSearchParams({name: "early", models: "`+callModel+`"})}).then(r => r.status)`)
	if st != http.StatusForbidden {
		j.t.Fatalf("an unverified account's post to /keys answered %d, want 403", st)
	}
	j.checkPage(j.b, "POST /keys unverified", true)
}

// verifyEmail reads the verification mail, opens its link and submits the
// form it leads to.
func (j *journey) verifyEmail(mail *smtpcapture.Server) {
	j.t.Helper()
	msg := mail.Next(j.t, mailWait)
	if len(msg.To) != 1 || msg.To[0] != j.email || msg.Subject != "Verify your email" {
		j.t.Fatalf("verification mail to %v: %q", msg.To, msg.Subject)
	}
	j.visit(j.b, linkPath(j.t, msg, "verify"), true)
	if text := j.b.Text("main"); !strings.Contains(text, j.email) {
		j.t.Fatalf("the verification page says %q, want the email", text)
	}
	j.submit(j.b, "/verify", true)
	if text := j.b.Text("main"); !strings.Contains(text, "Your email is verified") {
		j.t.Fatalf("after verifying, the page says %q", text)
	}
}

// checkoutHost is where Stripe (and stripe-mock) sends a customer to pay.
const checkoutHost = "https://checkout.stripe.com/"

// topUp pays with a preset button of the billing page: the browser is sent
// to Stripe Checkout, which a stand-in page answers (stripe-mock renders no
// page and the test must not reach the real Stripe); Stripe's signed
// webhook then says the session is paid, and the billing page shows the
// balance risen by the amount.
func (j *journey) topUp() {
	j.t.Helper()
	j.visit(j.b, "/billing", true)
	if bal := j.b.Text(".tiles .tile strong"); bal != "0.00 USD" {
		j.t.Fatalf("the balance before the top-up is %q, want 0.00 USD", bal)
	}
	hops := j.standInCheckout()
	j.b.Submit(`form[action="/dashboard/billing/topup"] button[value="` + topupAmount + `"]`)
	// The stand-in sets no cookie and logs nothing: the checks hold as on
	// the dashboard's pages.
	j.checkPage(j.b, "POST /billing/topup", true)
	ps := userPayments(j.t, j.user)
	if len(ps) != 1 || ps[0].Status != "open" || ps[0].AmountMinor != topupMinor || !strings.HasPrefix(ps[0].SessionID, "cs_") {
		j.t.Fatalf("the top-up's record: %+v", ps)
	}
	p := ps[0]
	loc := j.b.Location()
	if !strings.HasPrefix(loc, checkoutHost) {
		j.t.Fatalf("after the top-up the browser is at %s, want Stripe Checkout", loc)
	}
	select {
	case hop := <-hops:
		if hop.from != base+"/billing/topup" || hop.status != http.StatusSeeOther || hop.to != loc {
			j.t.Fatalf("the top-up redirected from %s with %d to %s, want a 303 from /billing/topup to %s", hop.from, hop.status, hop.to, loc)
		}
	default:
		j.t.Fatal("the browser reached Stripe Checkout by no redirect")
	}

	obj := map[string]any{"id": p.SessionID, "object": "checkout.session", "mode": "payment", "client_reference_id": j.user,
		"payment_status": "paid", "status": "complete", "amount_total": topupMinor, "currency": "usd",
		"payment_intent": "pi_" + p.SessionID, "metadata": map[string]any{"user": j.user, "topup_id": p.TopupID}}
	if st, outcome := sendWebhook(j.t, "checkout.session.completed", obj); st != http.StatusOK || outcome != "credited" {
		j.t.Fatalf("webhook: %d %q", st, outcome)
	}
	j.visit(j.b, "/billing", true)
	if bal := j.b.Text(".tiles .tile strong"); bal != topupAmount+" USD" {
		j.t.Fatalf("the balance after the top-up is %q, want %s USD", bal, topupAmount)
	}
	rows := browser.Eval[[][]string](j.b, `[...document.querySelectorAll("main tbody tr")].map(
		tr => [...tr.cells].map(td => td.textContent.trim()))`)
	// date, kind, amount, credited, status
	if len(rows) != 1 || len(rows[0]) != 5 || rows[0][2] != topupAmount+" USD" || rows[0][3] != topupAmount+" USD" || rows[0][4] != "paid" {
		j.t.Fatalf("payments on the billing page: %q, want the paid top-up", rows)
	}
}

// redeemCode redeems a prepaid code through the billing page's form: the
// page says so and the balance tile shows it.
func (j *journey) redeemCode() {
	j.t.Helper()
	code := mintCodes(j.t, "5.00", 1)[0]
	j.visit(j.b, "/billing", true)
	before := mustParse(j.t, strings.TrimSuffix(j.b.Text(".tiles .tile strong"), " USD"))
	j.b.Fill("code", code)
	j.submit(j.b, "/billing/redeem", true)
	if flash := j.b.Text(".flash"); flash != "Code redeemed: 5.00 USD added to your balance." {
		j.t.Fatalf("after the redeem the page says %q", flash)
	}
	if after := mustParse(j.t, strings.TrimSuffix(j.b.Text(".tiles .tile strong"), " USD")); after != before+5*money.NanosPerUnit {
		j.t.Fatalf("the balance went from %s to %s, want 5.00 more", before, after)
	}
}

// mustParse reads an amount the dashboard shows.
func mustParse(t *testing.T, s string) money.Nanos {
	t.Helper()
	n, err := money.ParseNanos(s)
	if err != nil {
		t.Fatalf("amount %q: %v", s, err)
	}
	return n
}

// redirect is one redirect the browser followed.
type redirect struct {
	from, to string
	status   int64
}

// standInCheckout makes the tab answer every request to Stripe Checkout
// with a blank page of its own, until the test ends, and returns the
// redirects the browser follows to it.
func (j *journey) standInCheckout() <-chan redirect {
	j.t.Helper()
	ctx, cancel := context.WithCancel(j.b.Context())
	j.t.Cleanup(cancel)
	paused := make(chan fetch.RequestID, 16)
	hops := make(chan redirect, 16)
	// The listener runs on chromedp's reading goroutine: no commands there,
	// and no blocking (the buffers outlast any page of the test).
	if err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *fetch.EventRequestPaused:
			select {
			case paused <- ev.RequestID:
			default:
			}
		case *network.EventRequestWillBeSent:
			if r := ev.RedirectResponse; r != nil && strings.HasPrefix(ev.Request.URL, checkoutHost) {
				select {
				case hops <- redirect{from: r.URL, to: ev.Request.URL, status: r.Status}:
				default:
				}
			}
		}
	}); err != nil {
		j.t.Fatalf("listening for Stripe Checkout: %v", err)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case id := <-paused:
				_, _ = chromedp.Call(ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{RequestID: id, ResponseCode: http.StatusOK,
					ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "text/html; charset=utf-8"}},
					Body:            []byte("<!doctype html><title>Stripe Checkout (stand-in)</title><p>Pay here.</p>")})
			}
		}
	}()
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{
		Patterns: []*fetch.RequestPattern{{URLPattern: checkoutHost + "*"}}}); err != nil {
		j.t.Fatalf("intercepting Stripe Checkout: %v", err)
	}
	return hops
}

// createKey mints a key for the model on the keys page and returns the
// secret the page shows once.
func (j *journey) createKey(name string) string {
	j.t.Helper()
	j.visit(j.b, "/keys", true)
	j.b.Fill("name", name)
	j.b.Fill("models", callModel)
	j.submit(j.b, "/keys", true)
	secret := strings.TrimSpace(j.b.Text("#secret"))
	if !strings.HasPrefix(secret, "sk-") {
		j.t.Fatalf("the keys page shows %q as the new secret", secret)
	}
	// Once only: the next view lists the key without it.
	j.visit(j.b, "/keys", true)
	if list := j.b.Text("main"); !strings.Contains(list, name) || strings.Contains(list, secret) {
		j.t.Fatal("the key is not listed, or its secret is shown again")
	}
	return secret
}

// callAPI makes one chat completion with the key through the official
// OpenAI client, and waits until it is settled and in the ledger.
func (j *journey) callAPI(secret string) {
	j.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c := openai.NewClient(option.WithBaseURL(fmt.Sprintf("http://localhost:%d/v1/", env.http)),
		option.WithAPIKey(secret), option.WithMaxRetries(0))
	res, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    callModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
	})
	if err != nil {
		j.t.Fatalf("chat completion through the gateway: %v", err)
	}
	if len(res.Choices) == 0 || res.Choices[0].Message.Content == "" {
		j.t.Fatalf("empty completion: %+v", res)
	}
	j.waitSettled(ctx)
}

// waitSettled waits until the account holds nothing and the call's usage
// row is in the ledger (the gateway flushes every 50ms).
func (j *journey) waitSettled(ctx context.Context) {
	j.t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var u struct {
			Held string `json:"held"`
		}
		var usage struct {
			Records []json.RawMessage `json:"records"`
		}
		_, ub := adminCall(j.t, "GET", "/aitoken/users/"+j.user, "")
		_, rb := adminCall(j.t, "GET", "/aitoken/usage?user="+j.user, "")
		if json.Unmarshal(ub, &u) == nil && json.Unmarshal(rb, &usage) == nil &&
			u.Held == "0.000000000" && len(usage.Records) == 1 {
			return
		}
		select {
		case <-ctx.Done():
			j.t.Fatalf("the call was not settled in time: user %s, usage %s", ub, rb)
		case <-tick.C:
		}
	}
}

// checkUsage finds the call's row on the usage page.
func (j *journey) checkUsage() {
	j.t.Helper()
	j.visit(j.b, "/usage", true)
	rows := browser.Eval[[][]string](j.b, `[...document.querySelectorAll("main tbody tr")].map(
		tr => [...tr.cells].map(td => td.textContent.trim()))`)
	if len(rows) != 1 {
		j.t.Fatalf("usage page rows: %q, want the one call", rows)
	}
	// time, model, key, tokens in, tokens out, cost, outcome
	if r := rows[0]; len(r) != 7 || r[1] != callModel || !strings.HasPrefix(r[2], "key_") ||
		r[3] != callInput || r[4] != callOutput || r[5] != callCost {
		j.t.Fatalf("usage row %q, want %s with %s/%s tokens costing %s", r, callModel, callInput, callOutput, callCost)
	}
}

// checkOverview checks the balance after the call, and that the chart
// draws a bar in the model's colour (the legend's swatch).
func (j *journey) checkOverview() {
	j.t.Helper()
	j.visit(j.b, "/", true)
	if tiles := j.b.Text(".tiles"); !strings.Contains(tiles, afterCall) {
		j.t.Fatalf("overview tiles %q, want a balance of %s - %s", tiles, topupAmount, callCost)
	}
	bars := browser.Eval[int](j.b, `(() => {
		const li = [...document.querySelectorAll(".legend li")].find(li => li.textContent.startsWith("`+callModel+`:"));
		if (!li) return -1;
		const fill = li.querySelector("rect").getAttribute("fill");
		return document.querySelectorAll('svg.chart rect[fill="' + fill + '"]').length;
	})()`)
	switch {
	case bars < 0:
		j.t.Fatalf("the chart's legend has no %s: %q", callModel, j.b.Text("main"))
	case bars != 1:
		j.t.Fatalf("the chart has %d bars in the colour of %s, want 1 (today)", bars, callModel)
	}
}

// screenshots writes the README's pictures when AITOKEN_SCREENSHOTS=1.
func (j *journey) screenshots() {
	j.t.Helper()
	if os.Getenv(screenshotsEnv) != "1" {
		return
	}
	dir := filepath.Join("..", "docs", "img")
	j.visit(j.b, "/", true)
	j.b.Screenshot(filepath.Join(dir, "dashboard-overview.png"))
	j.visit(j.b, "/keys", true)
	j.b.Screenshot(filepath.Join(dir, "dashboard-keys.png"))
}

// checkPhone signs in on a phone and checks that every page fits its
// width: nothing scrolls sideways but the tables inside their boxes.
func (j *journey) checkPhone() {
	j.t.Helper()
	phone := browser.Start(j.t, browser.Phone())
	defer phone.Close()
	fits := func(path string) {
		j.t.Helper()
		w := browser.Eval[[2]int](phone, `[document.documentElement.scrollWidth, document.documentElement.clientWidth]`)
		if w[0] > w[1] || w[1] != browser.PhoneWidth {
			j.t.Errorf("phone: %s is %dpx wide in a %dpx viewport (want %d, no sideways scroll)", path, w[0], w[1], browser.PhoneWidth)
		}
	}
	for _, p := range []string{"/signup", "/login", "/privacy"} {
		j.visit(phone, p, false)
		fits(p)
	}
	j.signIn(phone)
	for _, p := range []string{"/", "/keys", "/usage", "/account", "/sessions"} {
		j.visit(phone, p, true)
		fits(p)
	}
}

// downloadExport clicks "download my data" and reads the file the
// browser saved.
func (j *journey) downloadExport() {
	j.t.Helper()
	j.visit(j.b, "/account", true)
	dir := j.t.TempDir()
	ctx, cancel := context.WithTimeout(j.b.Context(), 20*time.Second)
	defer cancel()
	progress := chromedp.Events(ctx, cdpbrowser.DownloadProgress)
	events := true
	if err := chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
				Behavior:      cdpbrowser.SetDownloadBehaviorBehaviorAllowAndName,
				DownloadPath:  dir,
				EventsEnabled: &events,
			})
			return err
		}),
		chromedp.Click(chromedp.CSS(`a[href="/dashboard/account/export"]`)),
	); err != nil {
		j.t.Fatalf("download my data: %v", err)
	}
	var file string
	for ev, err := range progress {
		if err != nil {
			j.t.Fatalf("download my data: %v", err)
		}
		if ev.State == cdpbrowser.DownloadProgressStateCanceled {
			j.t.Fatal("download my data: the browser cancelled it")
		}
		if ev.State == cdpbrowser.DownloadProgressStateCompleted {
			file = filepath.Join(dir, ev.GUID)
			break
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		j.t.Fatalf("download my data: %v", err)
	}
	var doc usagelog.Export
	if err := json.Unmarshal(data, &doc); err != nil {
		j.t.Fatalf("the export is not JSON: %v: %.200s", err, data)
	}
	if doc.User.Email != j.email || doc.User.ID != j.user || len(doc.Keys) != 1 {
		j.t.Fatalf("the export is of %q (%s) with %d keys, want %q with its key", doc.User.Email, doc.User.ID, len(doc.Keys), j.email)
	}
	j.checkPage(j.b, "download my data", true)
}

func (j *journey) deleteAccount() {
	j.t.Helper()
	j.visit(j.b, "/account", true)
	// Two fields of the page are named current_password: type into the
	// delete form's own.
	if err := chromedp.Do(j.b.Context(), chromedp.SendKeys(chromedp.CSS("#delete_password"), j.password)); err != nil {
		j.t.Fatalf("typing the password to delete: %v", err)
	}
	j.b.Click("#confirm")
	j.submit(j.b, "/account/delete", false)
	if h := j.b.Text("h1"); h != "Account deleted" {
		j.t.Fatalf("after deleting the account the page says %q", h)
	}
}

// signInFails checks that the deleted account's credentials answer as
// any wrong ones do.
func (j *journey) signInFails() {
	j.t.Helper()
	j.visit(j.b, "/login", false)
	j.b.Fill("email", j.email)
	j.b.Fill("password", j.password)
	// The answer is a 401, which the browser logs.
	j.expected = append(j.expected, "network: Failed to load resource: the server responded with a status of 401 (Unauthorized) ("+base+"/login)")
	j.b.Submit(`form[action="/dashboard/login"] button[type="submit"]`)
	if msg := j.b.Text(".error"); msg != "Wrong email or password." {
		j.t.Fatalf("signing in to the deleted account says %q, want the generic error", msg)
	}
	if loc := j.b.Location(); loc != base+"/login" {
		j.t.Fatalf("signing in to the deleted account led to %s", loc)
	}
	j.checkPage(j.b, "sign-in after deletion", false)
}

// adminCall calls the test Caddy's admin API and returns the status and
// body.
func adminCall(tb testing.TB, method, path, body string) (int, []byte) {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, fmt.Sprintf("http://localhost:%d%s", env.adminPort, path), rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
