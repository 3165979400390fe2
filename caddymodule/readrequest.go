package caddymodule

import (
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/meter"
)

// This file reads a metered request's body: bounded, validated, and the
// model's price found, before anything is admitted.

// readRequest reads and parses the body, and finds the model's price.
func (h *Handler) readRequest(r *http.Request, format meter.Format) (*meter.Request, money.Price, *apiError) {
	if r.ContentLength > h.MaxRequestBody {
		return nil, money.Price{}, errTooLarge
	}
	if !identityBody(r.Header[hdrContentEncoding]) {
		// The meter could not read it; the upstream would.
		return nil, money.Price{}, errEncodedBody
	}
	var body []byte
	var err error
	if r.ContentLength > 0 && r.ContentLength <= smallBody {
		// A small body of known length: one exact read.
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, body)
	} else {
		// Memory grows with the bytes that arrive, not with what the
		// client announces: a Content-Length of 8 MiB and one byte sent
		// costs little.
		body, err = io.ReadAll(io.LimitReader(r.Body, h.MaxRequestBody+1))
		if err == nil && r.ContentLength > 0 && int64(len(body)) < r.ContentLength {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		// (errors.As's target escapes: declared here, it costs only a
		// failed read an allocation.)
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			// A request_body limit before this handler.
			return nil, money.Price{}, errTooLarge
		}
		// The client stopped sending (or went away): nobody to answer,
		// and nothing to blame on Redis or the key.
		return nil, money.Price{}, errClientClosed
	}
	if int64(len(body)) > h.MaxRequestBody {
		return nil, money.Price{}, errTooLarge
	}
	req, err := meter.ParseRequest(format, body, h.inject)
	if err != nil {
		return nil, money.Price{}, requestError(err)
	}
	price, ok := h.priceOf(req.Model)
	if !ok {
		return nil, money.Price{}, errModelNotFound(req.Model)
	}
	if h.models != nil {
		if _, ok := h.models[req.Model]; !ok {
			return nil, money.Price{}, errModelNotAllowed(req.Model)
		}
	}
	return req, price, nil
}

// requestError is the client's answer to a body ParseRequest refused.
func requestError(err error) *apiError {
	var fe *meter.FieldError
	switch {
	case errors.Is(err, meter.ErrMissingModel):
		return errInvalidRequest("you must provide a model parameter", "model")
	case errors.As(err, &fe):
		return errInvalidRequest(fe.Error(), fe.Field)
	}
	return errInvalidRequest("the request body is not a valid JSON object", "")
}

// identityBody reports whether the Content-Encoding values ce leave the
// body as it is: every coding named, in every header line, is identity.
// An upstream that applied a coding named in a second line, or after a
// comma, would read another body than the one metered.
func identityBody(ce []string) bool {
	for _, v := range ce {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return false
			}
		}
	}
	return true
}
