package meter

import (
	"strings"
	"testing"
)

// observeJSON runs an Observer for req over one JSON body.
func observeJSON(t *testing.T, req *Request, status int, body string) Result {
	t.Helper()
	res, _ := observe(t, req, status, "application/json", [][]byte{[]byte(body)})
	return res
}

// TestBillHostileReport: the attack of the issue. A report of 1e30 tokens
// on a request capped at 10 output tokens bills what the request could
// have cost, and says the report was cut.
func TestBillHostileReport(t *testing.T) {
	body := `{"model":"gpt-4o","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	req := &Request{Format: FormatChat, Model: "gpt-4o", MaxOutputTokens: 10, Choices: 1, Body: []byte(body)}
	res := observeJSON(t, req, 200, `{"choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":1e30,"completion_tokens":1e30,`+
		`"prompt_tokens_details":{"cached_tokens":1e30},"completion_tokens_details":{"reasoning_tokens":1e30}}}`)
	if !res.HasUsage || res.Usage.InputTokens != maxCount {
		t.Fatalf("observer: %+v", res)
	}
	got := Bill(req, res, BillTerms{Outcome: res.Outcome, Status: 200, Answered: true, OutputLimit: 10})
	in := int64(len(body)) + inputOverhead
	want := Billed{Usage: Usage{InputTokens: in, CachedInputTokens: in, OutputTokens: 10, ReasoningTokens: 10}, Clamped: true}
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestBill(t *testing.T) {
	chat := func(body string) *Request {
		return &Request{Format: FormatChat, Model: "gpt-4o", Choices: 1, Body: []byte(body), InputEstimate: int64(len(body)+1) / 2}
	}
	small := chat(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
	smallIn := int64(len(small.Body)) + inputOverhead
	report := func(in, out int64) Result {
		return Result{Usage: Usage{InputTokens: in, OutputTokens: out}, HasUsage: true, Outcome: OutcomeCompleted}
	}
	ok := BillTerms{Outcome: OutcomeCompleted, Status: 200, Answered: true, OutputLimit: 100}
	with := func(t BillTerms, f func(*BillTerms)) BillTerms { f(&t); return t }
	text := Result{Outcome: OutcomeCutOff, OutputChars: 5, OutputSample: []byte("hello"), Stream: true}
	helloOut := EstimateOutput("gpt-4o", text)
	smallEst := EstimateInput(FormatChat, "gpt-4o", small.Body)

	for _, tc := range []struct {
		name  string
		req   *Request
		res   Result
		terms BillTerms
		want  Billed
	}{
		{"report as is", small, report(20, 30), ok, Billed{Usage: Usage{InputTokens: 20, OutputTokens: 30}}},
		{"report of zero", small, report(0, 0), ok, Billed{}},
		{"output over the limit", small, report(20, 101), ok,
			Billed{Usage: Usage{InputTokens: 20, OutputTokens: 100}, Clamped: true}},
		{"output of n choices", &Request{Format: FormatChat, Choices: 3, Body: small.Body}, report(20, 300), ok,
			Billed{Usage: Usage{InputTokens: 20, OutputTokens: 300}}},
		{"output over n choices", &Request{Format: FormatChat, Choices: 3, Body: small.Body}, report(20, 301), ok,
			Billed{Usage: Usage{InputTokens: 20, OutputTokens: 300}, Clamped: true}},
		{"choices unset count one", &Request{Format: FormatChat, Body: small.Body}, report(20, 101), ok,
			Billed{Usage: Usage{InputTokens: 20, OutputTokens: 100}, Clamped: true}},
		{"choices saturate", &Request{Format: FormatChat, Choices: maxCount, Body: small.Body}, report(20, maxCount), ok,
			Billed{Usage: Usage{InputTokens: 20, OutputTokens: maxCount}}},
		{"no output limit", small, report(20, maxCount), with(ok, func(t *BillTerms) { t.OutputLimit = 0 }),
			Billed{Usage: Usage{InputTokens: 20, OutputTokens: maxCount}}},
		{"embeddings have no output", &Request{Format: FormatEmbeddings, Choices: 1, Body: small.Body}, report(20, 5), ok,
			Billed{Usage: Usage{InputTokens: 20}, Clamped: true}},
		{"input at the body bound", small, report(smallIn, 1), ok, Billed{Usage: Usage{InputTokens: smallIn, OutputTokens: 1}}},
		{"input over the body bound", small, report(smallIn+1, 1), ok,
			Billed{Usage: Usage{InputTokens: smallIn, OutputTokens: 1}, Clamped: true}},
		{"subsets follow", small, Result{HasUsage: true, Outcome: OutcomeCompleted,
			Usage: Usage{InputTokens: maxCount, CachedInputTokens: maxCount - 5, CacheWriteTokens: 5, OutputTokens: 500, ReasoningTokens: 400}}, ok,
			Billed{Usage: Usage{InputTokens: smallIn, CachedInputTokens: smallIn, OutputTokens: 100, ReasoningTokens: 100}, Clamped: true}},
		{"cut report keeps input, takes the larger output", small, Result{Usage: Usage{InputTokens: 20, OutputTokens: 1}, HasUsage: true,
			Outcome: OutcomeCutOff, OutputChars: 5, OutputSample: []byte("hello")}, with(ok, func(t *BillTerms) { t.Outcome = OutcomeCutOff }),
			Billed{Usage: Usage{InputTokens: 20, OutputTokens: max(1, helloOut)}, Estimated: helloOut > 1}},
		{"cut report with the larger output", small, Result{Usage: Usage{InputTokens: 20, OutputTokens: 90}, HasUsage: true,
			Outcome: OutcomeCutOff, OutputChars: 5, OutputSample: []byte("hello")}, with(ok, func(t *BillTerms) { t.Outcome = OutcomeCutOff }),
			Billed{Usage: Usage{InputTokens: 20, OutputTokens: 90}}},
		{"cut report: estimate bounded too", small, Result{Usage: Usage{InputTokens: 20, OutputTokens: 1}, HasUsage: true,
			Outcome: OutcomeClientGone, OutputChars: maxCount}, with(ok, func(t *BillTerms) { t.Outcome = OutcomeClientGone }),
			Billed{Usage: Usage{InputTokens: 20, OutputTokens: 100}, Estimated: true}},
		{"no report: estimate", small, text, with(ok, func(t *BillTerms) { t.Outcome = OutcomeCutOff }),
			Billed{Usage: Usage{InputTokens: smallEst, OutputTokens: helloOut}, Estimated: true}},
		{"no report: estimate bounded, not clamped", small, Result{Outcome: OutcomeCutOff, OutputChars: maxCount},
			with(ok, func(t *BillTerms) { t.Outcome = OutcomeCutOff }),
			Billed{Usage: Usage{InputTokens: smallEst, OutputTokens: 100}, Estimated: true}},
		{"upstream error without report", small, text, with(ok, func(t *BillTerms) { t.Outcome, t.Status = OutcomeUpstreamError, 500 }), Billed{}},
		{"upstream error with report", small, report(20, 3), with(ok, func(t *BillTerms) { t.Outcome, t.Status = OutcomeUpstreamError, 500 }),
			Billed{Usage: Usage{InputTokens: 20, OutputTokens: 3}}},
		{"no answer", small, Result{Outcome: OutcomeCutOff}, BillTerms{Outcome: OutcomeUpstreamError, Status: 502, OutputLimit: 100}, Billed{}},
		// on_client_gone cancel: at least the whole input of the hold.
		{"cancel: floor over the estimate", small, text, with(ok, func(t *BillTerms) { t.Outcome, t.MinInput = OutcomeClientGone, 1000 }),
			Billed{Usage: Usage{InputTokens: 1000, OutputTokens: helloOut}, Estimated: true}},
		{"cancel: floor over a report", small, report(20, 3), with(ok, func(t *BillTerms) { t.Outcome, t.MinInput = OutcomeClientGone, 1000 }),
			Billed{Usage: Usage{InputTokens: 1000, OutputTokens: 3}, Estimated: true}},
		{"cancel: report over the floor", small, report(2000, 3), with(ok, func(t *BillTerms) { t.Outcome, t.MinInput = OutcomeClientGone, 1000 }),
			Billed{Usage: Usage{InputTokens: 2000, OutputTokens: 3}}},
		{"cancel before the answer", small, Result{}, BillTerms{Outcome: OutcomeClientGone, Status: 499, MinInput: 1000, OutputLimit: 100},
			Billed{Usage: Usage{InputTokens: 1000}, Estimated: true}},
		{"cancel after an error answer", small, Result{}, BillTerms{Outcome: OutcomeClientGone, Status: 500, Answered: true, MinInput: 1000},
			Billed{}},
		{"nil request", nil, report(maxCount, 7), ok, Billed{Usage: Usage{InputTokens: maxCount, OutputTokens: 7}}},
	} {
		got := Bill(tc.req, tc.res, tc.terms)
		if got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

// TestBillInputBound: the input a request can legitimately cost beyond its
// body (stored state, media, the upstream's own tools) lifts the bound to a
// finite one, also when the body spells its keys with escapes.
func TestBillInputBound(t *testing.T) {
	ok := BillTerms{Outcome: OutcomeCompleted, Status: 200, Answered: true, OutputLimit: 100}
	for _, tc := range []struct {
		name   string
		format Format
		body   string
		media  int64
		bound  int64 // 0: the body's own
	}{
		{"plain chat", FormatChat, `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}`, 0, 0},
		{"chat with media", FormatChat, `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`, 1, contextInputBound},
		{"chat web search", FormatChat, `{"messages":[],"web_search_options":{}}`, 0, toolInputBound},
		{"chat web search null", FormatChat, `{"messages":[],"web_search_options":null}`, 0, 0},
		{"responses previous", FormatResponses, `{"input":"go on","previous_response_id":"resp_1"}`, 0, contextInputBound},
		{"responses previous escaped", FormatResponses, `{"input":"go on","previous\u005fresponse_id":"resp_1"}`, 0, contextInputBound},
		{"responses conversation", FormatResponses, `{"input":"go on","conversation":"conv_1"}`, 0, contextInputBound},
		{"responses prompt", FormatResponses, `{"prompt":{"id":"pmpt_1"}}`, 0, contextInputBound},
		{"responses item reference", FormatResponses, `{"input":[{"type":"item_\u0072eference","id":"msg_1"}]}`, 0, contextInputBound},
		{"responses web search", FormatResponses, `{"input":"x","tools":[{"type":"function","name":"f"},{"type":"web_search"}]}`, 0, toolInputBound},
		{"responses functions only", FormatResponses, `{"input":"x","tools":[{"type":"function","name":"f"},{"type":"custom","name":"g"}]}`, 0, 0},
		{"completions prompt is text", FormatCompletions, `{"prompt":"hi"}`, 0, 0},
		{"messages server tool escaped", FormatMessages, `{"messages":[],"tools":[{"t\u0079pe":"web_fetch_20250910","name":"web_fetch"}]}`, 0, toolInputBound},
		{"messages duplicate type", FormatMessages, `{"messages":[],"tools":[{"type":"custom","type":"web_search_20250305"}]}`, 0, toolInputBound},
		{"messages client tools", FormatMessages, `{"messages":[],"tools":[{"name":"get_weather","input_schema":{"type":"object"}}]}`, 0, 0},
		{"messages mcp", FormatMessages, `{"messages":[],"mcp_servers":[{"url":"https://x"}]}`, 0, toolInputBound},
	} {
		req := &Request{Format: tc.format, Choices: 1, MediaParts: tc.media, Body: []byte(tc.body)}
		want := tc.bound
		if want == 0 {
			want = int64(len(tc.body)) + inputOverhead
		}
		got := Bill(req, Result{Usage: Usage{InputTokens: maxCount}, HasUsage: true, Outcome: OutcomeCompleted}, ok)
		if got.Usage.InputTokens != want || !got.Clamped {
			t.Errorf("%s: input %d (clamped %v), want %d", tc.name, got.Usage.InputTokens, got.Clamped, want)
		}
		// A count under the bound is billed as is.
		if got := Bill(req, Result{Usage: Usage{InputTokens: want}, HasUsage: true, Outcome: OutcomeCompleted}, ok); got.Usage.InputTokens != want || got.Clamped {
			t.Errorf("%s: %d billed as %d (clamped %v)", tc.name, want, got.Usage.InputTokens, got.Clamped)
		}
	}
	// A body larger than a bound keeps its own.
	big := &Request{Format: FormatResponses, Choices: 1, Body: []byte(`{"previous_response_id":"r","input":"` + strings.Repeat("x", contextInputBound) + `"}`)}
	if got := Bill(big, Result{Usage: Usage{InputTokens: maxCount}, HasUsage: true, Outcome: OutcomeCompleted}, ok); got.Usage.InputTokens != int64(len(big.Body))+inputOverhead {
		t.Errorf("big body: input %d", got.Usage.InputTokens)
	}
}

// TestBillAgainstVisibleText: a report is checked against the text that
// passed. An upstream that ignored the request's limit is billed what it
// delivered; a report far below the text that passed (sent too early, or
// a placeholder) is billed the estimate of that text. Both are flagged.
func TestBillAgainstVisibleText(t *testing.T) {
	body := `{"model":"deepseek-chat","max_completion_tokens":1,"messages":[{"role":"user","content":"hi"}]}`
	req := &Request{Format: FormatChat, Model: "deepseek-chat", MaxOutputTokens: 1, Choices: 1, Body: []byte(body)}
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 100) // 4,500 characters
	passed := Result{HasUsage: true, Outcome: OutcomeCompleted, OutputChars: int64(len(text)), OutputSample: []byte(text)}
	est := EstimateOutput(req.Model, passed)
	if est < 1000 {
		t.Fatalf("estimate of 4,500 characters: %d", est)
	}
	terms := BillTerms{Outcome: OutcomeCompleted, Status: 200, Answered: true, OutputLimit: 1}

	// The upstream ignored max_completion_tokens and said so: billed as
	// reported, since the text that passed bears it out.
	honest := passed
	honest.Usage = Usage{InputTokens: 12, OutputTokens: est - 100}
	if got := Bill(req, honest, terms); got.Usage.OutputTokens != est-100 || got.Clamped {
		t.Errorf("limit ignored upstream: %+v, want output %d as reported", got, est-100)
	}
	// Claiming more than passed and more than the limit: the text that
	// passed is billed, flagged.
	honest.Usage.OutputTokens = est * 10
	if got := Bill(req, honest, terms); got.Usage.OutputTokens != est || !got.Clamped {
		t.Errorf("over the limit and the text: %+v, want output %d, clamped", got, est)
	}

	// A report of 0 or 1 output tokens after 4,500 characters.
	terms.OutputLimit = 1 << 18
	for _, out := range []int64{0, 1} {
		early := passed
		early.Usage = Usage{InputTokens: 12, OutputTokens: out}
		if got := Bill(req, early, terms); got.Usage.OutputTokens != est || !got.Clamped || got.Usage.InputTokens != 12 {
			t.Errorf("report of %d output tokens: %+v, want the estimate %d, clamped", out, got, est)
		}
	}
	// A true report is left alone, even below the estimate.
	fair := passed
	fair.Usage = Usage{InputTokens: 12, OutputTokens: est / 2}
	if got := Bill(req, fair, terms); got.Usage.OutputTokens != est/2 || got.Clamped || got.Estimated {
		t.Errorf("plausible report: %+v", got)
	}
}

// TestBillMinOutput: an upstream the gateway cut while it still generated
// is billed at least the output the hold covered.
func TestBillMinOutput(t *testing.T) {
	req := &Request{Format: FormatChat, Model: "m", Choices: 1, Body: []byte(`{"model":"m"}`), InputEstimate: 7}
	res := Result{Outcome: OutcomeCutOff, OutputChars: 10, OutputSample: []byte("0123456789")}
	got := Bill(req, res, BillTerms{Outcome: OutcomeClientGone, Status: 200, Answered: true, OutputLimit: 500, MinInput: 7, MinOutput: 300})
	if got.Usage.OutputTokens != 300 || got.Usage.InputTokens < 7 || !got.Estimated {
		t.Errorf("got %+v, want output 300, input >= 7, estimated", got)
	}
	// Never above the output bound, and not for an upstream error.
	got = Bill(req, res, BillTerms{Outcome: OutcomeClientGone, Status: 200, Answered: true, OutputLimit: 100, MinOutput: 300})
	if got.Usage.OutputTokens != 100 {
		t.Errorf("floor over the bound: %+v", got)
	}
	got = Bill(req, Result{Outcome: OutcomeUpstreamError}, BillTerms{Outcome: OutcomeUpstreamError, Status: 500, Answered: true, OutputLimit: 100, MinOutput: 300})
	if got.Usage != (Usage{}) {
		t.Errorf("an upstream error billed: %+v", got)
	}
}

// TestBillPromptArray: a completions request of many prompts is bounded
// by all of their completions, so a true report of their output is billed
// whole, not cut to one prompt's limit.
func TestBillPromptArray(t *testing.T) {
	body := `{"model":"gpt-3.5-turbo-instruct","prompt":[` + strings.Repeat(`"p",`, 49) + `"p"],"max_tokens":4096}`
	req, err := ParseRequest(FormatCompletions, []byte(body), false)
	if err != nil {
		t.Fatal(err)
	}
	if req.Choices != 50 {
		t.Fatalf("choices %d, want 50", req.Choices)
	}
	res := observeJSON(t, req, 200, `{"choices":[{"text":"the"}],"usage":{"prompt_tokens":50,"completion_tokens":187846}}`)
	got := Bill(req, res, BillTerms{Outcome: res.Outcome, Status: 200, Answered: true, OutputLimit: 4096})
	if got.Usage.OutputTokens != 187846 || got.Clamped {
		t.Errorf("got %+v, want all 187846 output tokens billed", got)
	}
	over := observeJSON(t, req, 200, `{"choices":[{"text":"the"}],"usage":{"prompt_tokens":50,"completion_tokens":204801}}`)
	if got := Bill(req, over, BillTerms{Outcome: over.Outcome, Status: 200, Answered: true, OutputLimit: 4096}); got.Usage.OutputTokens != 50*4096 || !got.Clamped {
		t.Errorf("over the bound: got %+v, want 50 × 4096 output tokens, clamped", got)
	}
}
