package caddymodule_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/cnaitoken/caddy-aitoken/caddymodule"
)

// GET /aitoken/users finds users by email (any letter case) and status,
// a page at a time; caddy aitoken users list prints them as a table.
func TestListUsers(t *testing.T) {
	gateway(t)
	mail := "List." + strings.ReplaceAll(t.Name(), "/", "") + "@Example.com"
	var ids []string
	for range 3 {
		var u userResp
		if st := admin(t, "POST", "/aitoken/users", `{"email":"`+mail+`","name":"L"}`, &u); st != http.StatusCreated {
			t.Fatalf("create: %d", st)
		}
		ids = append(ids, u.ID)
	}
	if st := admin(t, "DELETE", "/aitoken/users/"+ids[2], "", nil); st != http.StatusOK {
		t.Fatalf("delete: %d", st)
	}
	type page struct {
		Users []struct {
			ID     string `json:"id"`
			Email  string `json:"email"`
			Status string `json:"status"`
		} `json:"users"`
		Next string `json:"next"`
	}
	var p page
	if st := admin(t, "GET", "/aitoken/users?status=active&limit=1&email="+strings.ToLower(mail), "", &p); st != http.StatusOK ||
		len(p.Users) != 1 || p.Next == "" || p.Users[0].Email != mail {
		t.Fatalf("first page: %d %+v", st, p)
	}
	first, next := p.Users[0].ID, p.Next
	p = page{}
	if st := admin(t, "GET", "/aitoken/users?status=active&limit=1&email="+mail+"&cursor="+next, "", &p); st != http.StatusOK ||
		len(p.Users) != 1 || p.Users[0].ID == first {
		t.Fatalf("second page: %d %+v", st, p)
	}
	// The erased user's email is gone, so it is found by status only.
	p = page{}
	if admin(t, "GET", "/aitoken/users?email="+mail, "", &p); len(p.Users) != 2 {
		t.Fatalf("by email: %+v", p)
	}
	for _, bad := range []string{"status=gone", "limit=0", "sort=id"} {
		if st := admin(t, "GET", "/aitoken/users?"+bad, "", nil); st != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, st)
		}
	}
	addr := strings.TrimPrefix(adminURL, "http://")
	out, err := caddymodule.RunCLI(t, "users", "list", "--email", mail, "--address", addr)
	if err != nil || !strings.Contains(out, "EMAIL") || !strings.Contains(out, ids[0]) || !strings.Contains(out, ids[1]) {
		t.Fatalf("users list: %v\n%s", err, out)
	}
}
