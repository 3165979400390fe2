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
		{"numbers", FormatChat, `{"prompt_tokens":12.9,"completion_tokens":1e3,"total_tokens":-4}`,
			Usage{InputTokens: 12, OutputTokens: 1000}, true},
		{"negative and huge", FormatChat, `{"prompt_tokens":-5,"completion_tokens":99999999999999999999999}`,
			Usage{OutputTokens: maxCount}, true},
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
