package meter

import "testing"

func TestUsageNormalisation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format Format
		usage  string
		want   Usage
		ok     bool
	}{
		{"openai", FormatChat, `{"prompt_tokens":1200,"completion_tokens":310,"prompt_tokens_details":{"cached_tokens":1024},"completion_tokens_details":{"reasoning_tokens":256}}`,
			Usage{InputTokens: 1200, CachedInputTokens: 1024, OutputTokens: 310, ReasoningTokens: 256}, true},
		{"deepseek hit preferred", FormatChat, `{"prompt_tokens":5000,"prompt_cache_hit_tokens":4608,"prompt_cache_miss_tokens":392,"prompt_tokens_details":{"cached_tokens":1}}`,
			Usage{InputTokens: 5000, CachedInputTokens: 4608}, true},
		{"deepseek without prompt_tokens", FormatChat, `{"prompt_cache_hit_tokens":4608,"prompt_cache_miss_tokens":392,"completion_tokens":9}`,
			Usage{InputTokens: 5000, CachedInputTokens: 4608, OutputTokens: 9}, true},
		{"null fields", FormatChat, `{"prompt_tokens":null,"prompt_tokens_details":null,"completion_tokens":"7"}`,
			Usage{}, true},
		{"cached over input clamped", FormatChat, `{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":50},"completion_tokens":1,"completion_tokens_details":{"reasoning_tokens":9}}`,
			Usage{InputTokens: 10, CachedInputTokens: 10, OutputTokens: 1, ReasoningTokens: 1}, true},
		// Counts that are not non-negative integers are absent.
		{"numbers", FormatChat, `{"prompt_tokens":12.9,"completion_tokens":1e3,"total_tokens":-4}`,
			Usage{OutputTokens: 1000}, true},
		{"negative and huge", FormatChat, `{"prompt_tokens":-5,"completion_tokens":99999999999999999999999}`,
			Usage{OutputTokens: maxCount}, true},
		{"escaped keys", FormatChat, `{"prompt\u005ftokens":5,"completion_tokens_details":{"reasoning\u005ftokens":2},"completion_tokens":3}`,
			Usage{InputTokens: 5, OutputTokens: 3, ReasoningTokens: 2}, true},
		{"nested", FormatChat, `{"prompt_tokens":{"prompt_tokens":5},"completion_tokens":[3],"prompt_tokens_details":{"cached_tokens":{"v":1}}}`,
			Usage{}, true},
		{"embeddings", FormatEmbeddings, `{"prompt_tokens":8,"total_tokens":8}`, Usage{InputTokens: 8}, true},
		{"responses", FormatResponses, `{"input_tokens":900,"input_tokens_details":{"cached_tokens":512},"output_tokens":120,"output_tokens_details":{"reasoning_tokens":64}}`,
			Usage{InputTokens: 900, CachedInputTokens: 512, OutputTokens: 120, ReasoningTokens: 64}, true},
		{"anthropic", FormatMessages, `{"input_tokens":20,"cache_creation_input_tokens":1500,"cache_read_input_tokens":8000,"output_tokens":57,"cache_creation":{"ephemeral_5m_input_tokens":1500}}`,
			Usage{InputTokens: 9520, CachedInputTokens: 8000, CacheWriteTokens: 1500, OutputTokens: 57}, true},
		{"null", FormatChat, `null`, Usage{}, false},
		{"array", FormatChat, `[1]`, Usage{}, false},
		{"duplicate: last wins", FormatChat, `{"prompt_tokens":1,"prompt_tokens":2}`, Usage{InputTokens: 2}, true},
	} {
		w, ok := decodeUsage([]byte(tc.usage))
		if ok != tc.ok {
			t.Errorf("%s: ok %v", tc.name, ok)
		}
		if got := w.usage(tc.format); got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

func TestAnthropicOverlay(t *testing.T) {
	var w wireUsage
	for _, u := range []string{
		`{"input_tokens":20,"cache_creation_input_tokens":1500,"cache_read_input_tokens":8000,"output_tokens":1}`,
		`{"output_tokens":30}`,
		`{"output_tokens":57,"input_tokens":null}`,
	} {
		n, _ := decodeUsage([]byte(u))
		w.overlay(&n)
	}
	want := Usage{InputTokens: 9520, CachedInputTokens: 8000, CacheWriteTokens: 1500, OutputTokens: 57}
	if got := w.usage(FormatMessages); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestStringChars(t *testing.T) {
	for in, want := range map[string]int64{
		`""`:                0,
		`"abc"`:             3,
		`"é世😀"`:             3,
		`"\n\"\\\/"`:        4,
		`"\u00e9\u4e16"`:    2,
		`"\ud83d\ude00x"`:   2,
		`"\uD83D\uDE00"`:    1,
		`"\udc00"`:          0, // a lone low surrogate: not counted
		"\"\xff\xfe\x80a\"": 3, // invalid UTF-8: lead-ish bytes count
		`null`:              0,
		`5`:                 0,
	} {
		if got := stringChars([]byte(in)); got != want {
			t.Errorf("stringChars(%s) = %d, want %d", in, got, want)
		}
	}
}

func TestParseUsageCount(t *testing.T) {
	for in, want := range map[string]optInt{
		`0`: {0, true}, `12`: {12, true}, `12.0`: {12, true}, `1.2e1`: {12, true}, `1E3`: {1000, true}, `120e-1`: {12, true},
		`1e30`: {maxCount, true}, `99999999999999999999999`: {maxCount, true}, `1e400`: {maxCount, true},
		`1099511627776`: {maxCount, true}, `1099511627775`: {maxCount - 1, true},
		`12.5`: {}, `1e-1`: {}, `1e-400`: {0, true}, // as float64 reads it
		`-1`: {}, `-0`: {}, `"12"`: {}, `null`: {}, `true`: {}, `{}`: {}, `[1]`: {},
		`0x1p4`: {}, `1_000`: {}, `NaN`: {}, `Infinity`: {}, `12abc`: {}, ``: {},
	} {
		if got := parseUsageCount([]byte(in)); got != want {
			t.Errorf("parseUsageCount(%s) = %+v, want %+v", in, got, want)
		}
	}
}

// TestUsageReport: a usage object is a report only with the input and
// output counts its format reports.
func TestUsageReport(t *testing.T) {
	for _, tc := range []struct {
		format Format
		usage  string
		want   bool
	}{
		{FormatChat, `{"prompt_tokens":1,"completion_tokens":0}`, true},
		{FormatChat, `{"prompt_cache_hit_tokens":1,"prompt_cache_miss_tokens":2,"completion_tokens":0}`, true},
		{FormatChat, `{}`, false},
		{FormatChat, `{"total_tokens":5000}`, false},
		{FormatChat, `{"prompt_tokens":"12","completion_tokens":"3"}`, false},
		{FormatChat, `{"prompt_tokens":12}`, false},
		{FormatChat, `{"completion_tokens":12}`, false},
		{FormatChat, `{"prompt_tokens":12,"completion_tokens":null}`, false},
		{FormatChat, `{"prompt_cache_hit_tokens":1,"completion_tokens":0}`, false},
		{FormatCompletions, `{"prompt_tokens":1,"completion_tokens":2}`, true},
		{FormatEmbeddings, `{"prompt_tokens":8,"total_tokens":8}`, true},
		{FormatEmbeddings, `{"total_tokens":8}`, false},
		{FormatResponses, `{"input_tokens":1,"output_tokens":2}`, true},
		{FormatResponses, `{"input_tokens":1,"total_tokens":2}`, false},
		{FormatResponses, `{"output_tokens":2}`, false},
		{FormatMessages, `{"input_tokens":1,"output_tokens":2}`, true},
		{FormatMessages, `{"cache_read_input_tokens":100,"output_tokens":2}`, false},
		{FormatMessages, `{"output_tokens":2}`, false},
	} {
		w, _ := decodeUsage([]byte(tc.usage))
		if got := w.complete(tc.format); got != tc.want {
			t.Errorf("%s %s: report %v, want %v", tc.format, tc.usage, got, tc.want)
		}
	}
}

// TestStreamUsageReports: in a stream too, an object without the counts
// is no report, and does not replace the report before it.
func TestStreamUsageReports(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format Format
		in     string
		want   Result
	}{
		{"chat empty", FormatChat, "data: {\"choices\":[],\"usage\":{}}\n\ndata: [DONE]\n\n",
			Result{Outcome: OutcomeCompleted, Stream: true}},
		{"chat total only", FormatChat, "data: {\"choices\":[],\"usage\":{\"total_tokens\":5000}}\n\ndata: [DONE]\n\n",
			Result{Outcome: OutcomeCompleted, Stream: true}},
		{"chat report then empty", FormatChat, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":\"0\",\"completion_tokens\":0}}\n\ndata: [DONE]\n\n",
			Result{Usage: Usage{InputTokens: 4, OutputTokens: 2}, HasUsage: true, Outcome: OutcomeCompleted, Stream: true}},
		{"responses without output", FormatResponses, "data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":5}}}\n\n",
			Result{Outcome: OutcomeCompleted, Stream: true}},
		// Anthropic: message_start's input, then message_delta's output.
		{"messages start without input", FormatMessages,
			"data: {\"type\":\"message_start\",\"message\":{\"usage\":{}}}\n\n" +
				"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\ndata: {\"type\":\"message_stop\"}\n\n",
			Result{Outcome: OutcomeCompleted, Stream: true}},
		{"messages start then delta", FormatMessages,
			"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7}}}\n\n" +
				"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\ndata: {\"type\":\"message_stop\"}\n\n",
			Result{Usage: Usage{InputTokens: 7, OutputTokens: 9}, HasUsage: true, Outcome: OutcomeCompleted, Stream: true}},
		{"messages delta negative", FormatMessages,
			"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n" +
				"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":-9}}\n\n",
			Result{Usage: Usage{InputTokens: 7, OutputTokens: 1}, HasUsage: true, Outcome: OutcomeCutOff, Stream: true}},
	} {
		got, _ := observe(t, &Request{Format: tc.format, Stream: true}, 200, sseType, [][]byte{[]byte(tc.in)})
		if !sameResult(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}
