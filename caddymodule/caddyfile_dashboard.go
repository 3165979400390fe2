package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("aitoken_dashboard", parseDashboard)
	// It answers requests, like respond: ahead of it, so a catch-all
	// respond does not shadow the pages.
	httpcaddyfile.RegisterDirectiveOrder("aitoken_dashboard", httpcaddyfile.Before, "respond")
}

// parseDashboard reads the aitoken_dashboard directive:
//
//	aitoken_dashboard {
//		prefix              <path>            # default /dashboard
//		signup              open|invite|closed
//		session_idle        <duration>        # default 2h
//		session_lifetime    <duration>        # default 7d
//		privacy_policy_file <path>
//		base_url            <url>             # default: the request's
//		smtp {
//			host     <host>
//			port     <port>                   # default 587
//			username <user>
//			password <password>               # {env.*} or {file.*}
//			from     <address>
//		}
//	}
func parseDashboard(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Dashboard)
	d := h.Dispenser
	d.Next()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "prefix":
			if err := oneArg(d, &m.Prefix); err != nil {
				return nil, err
			}
		case "signup":
			if err := oneArg(d, &m.Signup); err != nil {
				return nil, err
			}
			switch m.Signup {
			case "open", "invite", "closed":
			default:
				return nil, d.Errf("signup %q: want open, invite or closed", m.Signup)
			}
		case "session_idle", "session_lifetime":
			name := d.Val()
			var s string
			if err := oneArg(d, &s); err != nil {
				return nil, err
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur <= 0 {
				return nil, d.Errf("%s %q: want a positive duration such as 30m or 7d", name, s)
			}
			if name == "session_idle" {
				m.SessionIdle = caddy.Duration(dur)
			} else {
				m.SessionLifetime = caddy.Duration(dur)
			}
		case "privacy_policy_file":
			if err := oneArg(d, &m.PrivacyPolicyFile); err != nil {
				return nil, err
			}
		case "base_url":
			if err := oneArg(d, &m.BaseURL); err != nil {
				return nil, err
			}
		case "smtp":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			m.SMTP = new(DashboardSMTP)
			for d.NextBlock(1) {
				sub := d.Val()
				var v string
				if err := oneArg(d, &v); err != nil {
					return nil, err
				}
				switch sub {
				case "host":
					m.SMTP.Host = v
				case "port":
					p, err := strconv.Atoi(v)
					if err != nil || p < 1 || p > 65535 {
						return nil, d.Errf("smtp port %q: want a number from 1 to 65535", v)
					}
					m.SMTP.Port = p
				case "username":
					m.SMTP.Username = v
				case "password":
					m.SMTP.Password = v
				case "from":
					m.SMTP.From = v
				default:
					return nil, d.Errf("unknown smtp option %q", sub)
				}
			}
			if m.SMTP.Host == "" || m.SMTP.From == "" {
				return nil, d.Err("smtp needs host and from")
			}
		default:
			return nil, d.Errf("unknown aitoken_dashboard option %q", d.Val())
		}
	}
	return m, nil
}
