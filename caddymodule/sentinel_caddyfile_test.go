package caddymodule

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestSentinelCaddyfile(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  *SentinelConfig
	}{
		{
			name: "one sentinel",
			input: `aitoken {
				redis_sentinel mymaster 10.0.0.1:26379
			}`,
			want: &SentinelConfig{Master: "mymaster", Addrs: []string{"10.0.0.1:26379"}},
		},
		{
			name: "several sentinels and a password",
			input: `aitoken {
				redis redis://:{env.REDIS_PW}@ignored:6379/2
				redis_sentinel mymaster 10.0.0.1:26379 10.0.0.2:26379 10.0.0.3:26379 {
					password {env.SENTINEL_PW}
				}
				currency EUR
			}`,
			want: &SentinelConfig{
				Master:   "mymaster",
				Addrs:    []string{"10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"},
				Password: "{env.SENTINEL_PW}",
			},
		},
		{
			name: "empty block",
			input: `aitoken {
				redis_sentinel m 127.0.0.1:26379 {
				}
			}`,
			want: &SentinelConfig{Master: "m", Addrs: []string{"127.0.0.1:26379"}},
		},
		{
			name: "absent",
			input: `aitoken {
				redis redis://127.0.0.1:6380/0
			}`,
			want: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var app App
			if err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); err != nil {
				t.Fatalf("UnmarshalCaddyfile: %v", err)
			}
			if !reflect.DeepEqual(app.RedisSentinel, tc.want) {
				t.Fatalf("RedisSentinel = %+v, want %+v", app.RedisSentinel, tc.want)
			}
		})
	}
}

// The option reaches the app's JSON config under redis_sentinel.
func TestSentinelCaddyfileJSON(t *testing.T) {
	v, err := parseGlobalOption(caddyfile.NewTestDispenser(`aitoken {
		redis_sentinel m 127.0.0.1:26379 127.0.0.1:26380 {
			password secret
		}
	}`), nil)
	if err != nil {
		t.Fatalf("parseGlobalOption: %v", err)
	}
	app, ok := v.(httpcaddyfile.App)
	if !ok {
		t.Fatalf("parseGlobalOption returned %T, want httpcaddyfile.App", v)
	}
	var got struct {
		RedisSentinel map[string]any `json:"redis_sentinel"`
	}
	if err := json.Unmarshal(app.Value, &got); err != nil {
		t.Fatalf("app JSON %s: %v", app.Value, err)
	}
	want := map[string]any{
		"master":   "m",
		"addrs":    []any{"127.0.0.1:26379", "127.0.0.1:26380"},
		"password": "secret",
	}
	if !reflect.DeepEqual(got.RedisSentinel, want) {
		t.Fatalf("redis_sentinel JSON = %v, want %v (app JSON %s)", got.RedisSentinel, want, app.Value)
	}
}

func TestSentinelCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		wantErr string // substring of the error
	}{
		{"no arguments", `aitoken {
			redis_sentinel
		}`, "master name and sentinel addresses"},
		{"master without sentinels", `aitoken {
			redis_sentinel mymaster
		}`, "master name and sentinel addresses"},
		{"unknown sub-option", `aitoken {
			redis_sentinel m 127.0.0.1:26379 {
				username bob
			}
		}`, "unrecognized redis_sentinel option"},
		{"password without value", `aitoken {
			redis_sentinel m 127.0.0.1:26379 {
				password
			}
		}`, "wrong argument count"},
		{"password with two values", `aitoken {
			redis_sentinel m 127.0.0.1:26379 {
				password a b
			}
		}`, "wrong argument count"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var app App
			err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil {
				t.Fatalf("no error; RedisSentinel = %+v", app.RedisSentinel)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// Validate refuses a sentinel config without a master or sentinels (as JSON
// config can give).
func TestSentinelValidate(t *testing.T) {
	for _, s := range []*SentinelConfig{
		{Addrs: []string{"127.0.0.1:26379"}},
		{Master: "m"},
	} {
		app := App{Currency: "USD", RedisSentinel: s}
		if err := app.Validate(); err == nil || !strings.Contains(err.Error(), "redis_sentinel") {
			t.Errorf("Validate(%+v) = %v, want a redis_sentinel error", s, err)
		}
	}
	app := App{Currency: "USD", RedisSentinel: &SentinelConfig{Master: "m", Addrs: []string{"127.0.0.1:26379"}}}
	if err := app.Validate(); err != nil {
		t.Errorf("Validate(valid) = %v", err)
	}
}
