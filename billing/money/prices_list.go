package money

import "slices"

// Models returns the model names priced exactly, sorted. Wildcard
// ("prefix*") entries are not names a client can be shown; see Covers.
func (t *PriceTable) Models() []string {
	if t == nil {
		return nil
	}
	out := make([]string, 0, len(t.exact))
	for m := range t.exact {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}
