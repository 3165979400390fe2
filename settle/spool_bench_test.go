package settle

import (
	"encoding/json"
	"path/filepath"
	"testing"
)

// Both include the fsync; the parallel one shows concurrent appends sharing it.
func BenchmarkSpoolAppend(b *testing.B) {
	s := openSpoolT(b, filepath.Join(b.TempDir(), "spool"))
	e := spoolEntry{ID: "req_0123456789abcdef", Payload: json.RawMessage(`{"key":"k_1","model":"gpt-4o-mini","in":1234,"out":567,"cost":8901234}`)}
	for b.Loop() {
		if err := s.Append(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSpoolAppendParallel(b *testing.B) {
	s := openSpoolT(b, filepath.Join(b.TempDir(), "spool"))
	e := spoolEntry{ID: "req_0123456789abcdef", Payload: json.RawMessage(`{"key":"k_1","model":"gpt-4o-mini","in":1234,"out":567,"cost":8901234}`)}
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Append(e); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
