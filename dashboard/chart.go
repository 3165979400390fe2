package dashboard

import (
	"fmt"
	"html/template"
	"sort"
	"strings"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// chartDays is the span of the overview's chart; chartModels how many
// models get a colour of their own (the rest are summed as "other").
const (
	chartDays   = 30
	chartModels = 5
)

var palette = []string{"#1f5fa8", "#c2571a", "#2e7d32", "#8e24aa", "#b8860b", "#607080"}

// legend is one colour of the chart.
type legend struct {
	Model string
	Color string
	Total money.Nanos
}

// spendChart draws days of spend by model as stacked bars in an inline
// SVG (no script, nothing from elsewhere), from the day starting at from.
func spendChart(rows []usagelog.DaySpend, from time.Time, other, title string) (template.HTML, []legend) {
	totals := map[string]money.Nanos{}
	for _, r := range rows {
		totals[r.Model] += r.Cost
	}
	models := make([]string, 0, len(totals))
	for m := range totals {
		models = append(models, m)
	}
	sort.Slice(models, func(i, j int) bool {
		if totals[models[i]] != totals[models[j]] {
			return totals[models[i]] > totals[models[j]]
		}
		return models[i] < models[j]
	})
	color := map[string]int{}
	var leg []legend
	for i, m := range models {
		if i < chartModels {
			color[m] = i
			leg = append(leg, legend{m, palette[i], totals[m]})
			continue
		}
		color[m] = chartModels
		if len(leg) == chartModels {
			leg = append(leg, legend{other, palette[chartModels], 0})
		}
		leg[chartModels].Total += totals[m]
	}
	var days [chartDays][chartModels + 1]money.Nanos
	var peak money.Nanos
	for _, r := range rows {
		i := int(r.Day.Sub(from) / (24 * time.Hour))
		if i < 0 || i >= chartDays {
			continue
		}
		days[i][color[r.Model]] += r.Cost
	}
	for _, d := range days {
		var sum money.Nanos
		for _, c := range d {
			sum += c
		}
		peak = max(peak, sum)
	}
	const w, h, bar = 600, 160, 16
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`,
		w, h+20, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<line x1="0" y1="%d" x2="%d" y2="%d" stroke="#888"/>`, h, w, h)
	for i, d := range days {
		x := i*(w/chartDays) + 2
		y := float64(h)
		for c, cost := range d {
			if cost <= 0 || peak <= 0 {
				continue
			}
			bh := float64(cost) / float64(peak) * (h - 4)
			y -= bh
			fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s %s</title></rect>`,
				x, y, bar, bh, palette[c], from.AddDate(0, 0, i).Format("2006-01-02"), cost)
		}
		if i%7 == 0 {
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" fill="#444">%s</text>`,
				x, h+14, from.AddDate(0, 0, i).Format("01-02"))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()), leg
}
