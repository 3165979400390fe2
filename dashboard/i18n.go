package dashboard

import (
	"net/http"

	"golang.org/x/text/language"
)

// The languages of the dashboard, English first (the fallback).
var (
	languages = []language.Tag{language.English, language.SimplifiedChinese}
	matcher   = language.NewMatcher(languages)
)

// langCodes are the values of the lang query parameter and of a session's
// choice, by language.
var langCodes = map[language.Tag]string{language.English: "en", language.SimplifiedChinese: "zh-Hans"}

// pickLanguage returns the language to answer in: the lang query
// parameter, else the session's choice, else Accept-Language.
func pickLanguage(r *http.Request, chosen string) language.Tag {
	for _, s := range []string{r.URL.Query().Get("lang"), chosen} {
		if s == "" {
			continue
		}
		if t, err := language.Parse(s); err == nil {
			_, i, c := matcher.Match(t)
			if c >= language.High {
				return languages[i]
			}
		}
	}
	tags, _, _ := language.ParseAcceptLanguage(r.Header.Get("Accept-Language"))
	_, i, _ := matcher.Match(tags...)
	return languages[i]
}

// translator returns the text of a message key in lang, falling back to
// English, then to the key itself.
func translator(lang language.Tag) func(key string) string {
	cat := catalogue[lang]
	return func(key string) string {
		if s, ok := cat[key]; ok {
			return s
		}
		if s, ok := catalogue[language.English][key]; ok {
			return s
		}
		return key
	}
}
