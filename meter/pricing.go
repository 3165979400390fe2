package meter

import (
	"bytes"
	"strconv"
	"strings"
)

// This file refuses the request fields that make an upstream bill other
// than by tokens at the model's price (tiers, audio, hosted tools).

// checkPricing refuses the fields that make the upstream bill other than
// plain tokens at the model's price.
func checkPricing(f Format, vals *[numFields][]byte) error {
	if v := vals[fServiceTier]; !isNull(v) {
		tier, isStr := jsonString(v)
		switch {
		case !isStr:
			return &FieldError{Field: "service_tier", Reason: "must be a string or null"}
		case tier == "auto", tier == "default", tier == "standard_only" && f == FormatMessages:
		default:
			return &FieldError{Field: "service_tier", Reason: "tier " + quoteShort([]byte(tier)) +
				` is priced differently from plain tokens; only "auto" and "default" are accepted`}
		}
	}
	switch f {
	case FormatChat:
		if v := vals[fModalities]; !isNull(v) {
			items, ok := elements(v)
			if !ok {
				return &FieldError{Field: "modalities", Reason: "must be an array or null"}
			}
			for {
				m, more := items.next()
				if !more {
					break
				}
				if s, _ := jsonString(m); foldsTo([]byte(s), "audio") {
					return &FieldError{Field: "modalities", Reason: "audio output is priced per audio token and is not supported"}
				}
			}
		}
		if !isNull(vals[fAudio]) {
			return &FieldError{Field: "audio", Reason: "audio output is priced per audio token and is not supported"}
		}
		if !isNull(vals[fWebSearchOptions]) {
			return &FieldError{Field: "web_search_options", Reason: "web search is billed per call and is not supported"}
		}
	case FormatResponses:
		if bg, ok := readBool(vals[fBackground]); !ok {
			return &FieldError{Field: "background", Reason: "must be true, false or null"}
		} else if bg {
			return &FieldError{Field: "background", Reason: "background responses are not supported"}
		}
		return checkTools(vals[fTools], responsesTool)
	case FormatMessages:
		if v := vals[fSpeed]; !isNull(v) {
			if sp, _ := jsonString(v); sp != "standard" {
				return &FieldError{Field: "speed", Reason: `only "standard" is accepted: faster output is priced higher`}
			}
		}
		if v := vals[fInferenceGeo]; !isNull(v) {
			if geo, _ := jsonString(v); geo != "global" {
				return &FieldError{Field: "inference_geo", Reason: `only "global" is accepted: a pinned region is priced higher`}
			}
		}
		if v := vals[fMCPServers]; !isNull(v) && !isEmptyArray(v) {
			return &FieldError{Field: "mcp_servers", Reason: "MCP servers are not supported"}
		}
		return checkTools(vals[fTools], messagesTool)
	}
	return nil
}

// responsesTool reports whether a Responses tool type is billed as plain
// tokens: only function and custom tools are; the hosted ones (web search,
// file search, code interpreter, image generation, computer use, MCP, ...)
// are billed per call or per session.
func responsesTool(typ string, isNull bool) bool {
	return !isNull && (typ == "function" || typ == "custom")
}

// messagesTool reports whether an Anthropic tool type is billed as plain
// tokens: custom tools (no type, or "custom") and the Anthropic-defined
// tools the client runs itself. Server tools (web_search_*, web_fetch_*,
// code_execution_*, and any new one) are refused.
func messagesTool(typ string, isNull bool) bool {
	if isNull || typ == "custom" {
		return true
	}
	for _, p := range [...]string{"bash_", "text_editor_", "computer_", "memory_"} {
		if strings.HasPrefix(typ, p) {
			return true
		}
	}
	return false
}

// checkTools checks each tool of the tools member v with allowed, given its
// "type" (guarded like a top-level field: once, exactly named, a string or
// null).
func checkTools(v []byte, allowed func(typ string, isNull bool) bool) error {
	if isNull(v) {
		return nil
	}
	tools, ok := elements(v)
	if !ok {
		return &FieldError{Field: "tools", Reason: "must be an array or null"}
	}
	for i := 0; ; i++ {
		tool, more := tools.next()
		if !more {
			return nil
		}
		it, ok := members(tool)
		if !ok {
			return &FieldError{Field: "tools", Reason: "tool " + strconv.Itoa(i) + " is not an object"}
		}
		var typ []byte
		for {
			k, val, more := it.next()
			if !more {
				break
			}
			exact, variant := matchKey(k, "type")
			switch {
			case variant:
				return &FieldError{Field: "tools", Reason: "tool " + strconv.Itoa(i) + " also gives \"type\" as " +
					quoteShort(unescapeKey(k)) + ", which differs only in letter case"}
			case !exact:
				continue
			case typ != nil:
				return &FieldError{Field: "tools", Reason: "tool " + strconv.Itoa(i) + " gives \"type\" twice"}
			}
			typ = val
		}
		s, isStr := jsonString(typ)
		if !isStr && !isNull(typ) {
			return &FieldError{Field: "tools", Reason: "tool " + strconv.Itoa(i) + ` has a "type" that is not a string`}
		}
		if !allowed(s, isNull(typ)) {
			return &FieldError{Field: "tools", Reason: "tool " + strconv.Itoa(i) + " has type " + quoteShort([]byte(s)) +
				", which is billed per use and is not supported"}
		}
	}
}

// jsonString decodes v if it is a JSON string.
func jsonString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	return unquote(v[1 : len(v)-1]), true
}

// checkCacheTTL refuses a Messages body that asks, in a cache_control
// anywhere in it (system, message content, tools), for a cache lifetime
// other than the default five minutes: Anthropic prices writes to its
// one-hour cache higher than the one cache-write price the gateway bills.
// Keys are matched in any letter case, escaped or not, as elsewhere.
func checkCacheTTL(body []byte) error {
	if !mayNameTTL(body) {
		return nil
	}
	if end, bad := ttlWalk(body, skipWS(body, 0), false); end >= 0 && bad {
		return &FieldError{Field: "cache_control", Reason: `only the default "5m" ttl is accepted: one-hour cache writes are priced higher`}
	}
	return nil
}

// mayNameTTL reports whether body can hold a "ttl" key: it has the letters
// "tl" in some letter case, or an escape that could spell them.
func mayNameTTL(body []byte) bool {
	for _, s := range [...]string{"tl", "tL", "Tl", "TL", `\u`} {
		if bytes.Contains(body, []byte(s)) {
			return true
		}
	}
	return false
}

// ttlWalk walks the JSON value at b[i] and returns the index just past it
// (-1 if it is not valid JSON) and whether it holds a cache_control with a
// ttl other than "5m". inCache is set for the value of a cache_control
// member, whose own "ttl" is checked.
func ttlWalk(b []byte, i int, inCache bool) (end int, bad bool) {
	if i >= len(b) {
		return -1, false
	}
	switch b[i] {
	case '[':
		if i = skipWS(b, i+1); i < len(b) && b[i] == ']' {
			return i + 1, false
		}
		for {
			e, found := ttlWalk(b, i, false)
			if e < 0 || found {
				return e, found
			}
			next, more := afterValue(b, e, ']')
			if next < 0 || !more {
				return next, false
			}
			i = next
		}
	case '{':
		if i = skipWS(b, i+1); i < len(b) && b[i] == '}' {
			return i + 1, false
		}
		for {
			k, vi := memberValue(b, i)
			if vi < 0 {
				return -1, false
			}
			k = unescapeKey(k)
			var e int
			if inCache && foldsTo(k, "ttl") {
				if e = valueEnd(b, vi); e > vi && !isNull(b[vi:e]) && string(b[vi:e]) != `"5m"` {
					return e, true
				}
			} else {
				var found bool
				if e, found = ttlWalk(b, vi, foldsTo(k, "cache_control")); found {
					return e, true
				}
			}
			if e < 0 {
				return -1, false
			}
			next, more := afterValue(b, e, '}')
			if next < 0 || !more {
				return next, false
			}
			i = next
		}
	}
	return valueEnd(b, i), false
}
