package caddymodule_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/cnaitoken/caddy-aitoken/internal/freeport"
	"github.com/cnaitoken/caddy-aitoken/internal/stripemock"
)

// The Stripe settings of the test config. The secrets reach Caddy only as
// {env.*} placeholders, so tests can check they never appear in its config.
const (
	testStripeKey     = "sk_test_4eC39HqLyjWDarjtT1zdp7dcAitoken"
	testWebhookSecret = "whsec_aitoken_test_secret"
)

// stripeEnv is the stripe-mock TestMain starts (when it is installed) on
// ports the config's api_base names.
var stripeEnv struct {
	httpPort, httpsPort int
	mock                *stripemock.Mock
	err                 error // why stripe-mock is not running
}

// startStripeEnv sets the Stripe secrets in the environment and starts
// stripe-mock on free loopback ports. A missing stripe-mock is remembered,
// and fails the tests that need it.
func startStripeEnv() (stop func()) {
	os.Setenv("AITOKEN_TEST_STRIPE_KEY", testStripeKey)
	os.Setenv("AITOKEN_TEST_WEBHOOK_SECRET", testWebhookSecret)
	stripeEnv.httpPort, stripeEnv.httpsPort = freeport.Must(), freeport.Must()
	mock, err := stripemock.Start(stripeEnv.httpPort, stripeEnv.httpsPort)
	if err != nil {
		stripeEnv.err = err
		return func() {}
	}
	stripeEnv.mock = mock
	return mock.Stop
}

// withStripe adds the stripe block to the aitoken option of a test config,
// and the webhook and account routes to its site.
func withStripe(cfg string) string {
	const site = "\t}\n}\nhttp://localhost:9080 {\n"
	if !strings.Contains(cfg, site) {
		panic("withStripe: the test config's layout changed; update stripe_env_test.go")
	}
	block := fmt.Sprintf(`		stripe {
			secret_key     {env.AITOKEN_TEST_STRIPE_KEY}
			webhook_secret {env.AITOKEN_TEST_WEBHOOK_SECRET}
			success_url    https://example.com/topup/done?session_id={CHECKOUT_SESSION_ID}
			cancel_url     https://example.com/topup/cancel
			min_topup      5.00
			max_topup      500.00
			topup_rate     3 1h
			api_base       http://127.0.0.1:%d
		}
`, stripeEnv.httpPort)
	routes := `	handle /stripe/webhook {
		aitoken_stripe
	}
	route /v1/account* {
		aitoken_account
	}
`
	return strings.Replace(cfg, site, block+site+routes, 1)
}
