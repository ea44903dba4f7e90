package proxy

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestMergeConfig: the reloadable settings that differ are copied and named,
// the others are named as needing a restart and keep their running value; an
// empty list equals no list.
func TestMergeConfig(t *testing.T) {
	running := DefaultConfig()
	running.Master = "127.0.0.1:6379"
	running.Slaves = []string{"127.0.0.1:6380"}
	running.RequirePass = "old"
	next := running
	next.Slaves = []string{"127.0.0.1:6380", "127.0.0.1:6381"}
	next.RequirePass = "new"
	next.IdleTimeout = time.Minute
	next.Listen = "127.0.0.1:1"
	next.MasterPassword = "changed"
	next.Users = []User{}
	next.Weights = map[string]int{}

	merged := running
	changed, refused := mergeConfig(&merged, &next)
	if got := strings.Join(changed, ","); got != "slaves,requirepass,idle-timeout" {
		t.Errorf("changed %q", got)
	}
	if got := strings.Join(refused, ","); got != "listen,master-password" {
		t.Errorf("refused %q", got)
	}
	if merged.RequirePass != "new" || merged.IdleTimeout != time.Minute || len(merged.Slaves) != 2 {
		t.Errorf("reloadable settings not applied: %+v", merged)
	}
	if merged.Listen != running.Listen || merged.MasterPassword != "" {
		t.Errorf("settings needing a restart changed: listen %q, master-password set %v", merged.Listen, merged.MasterPassword != "")
	}
}

// TestReloadableNames: every setting has a config-file name, and exactly the
// settings README's reload table names are reloadable.
func TestReloadableNames(t *testing.T) {
	var got []string
	typ := reflect.TypeOf(Config{})
	for i := 0; i < typ.NumField(); i++ {
		name := SettingName(typ.Field(i))
		if name == "" || name == "-" {
			t.Errorf("Config.%s has no yaml name: a reload could not name it", typ.Field(i).Name)
		}
		if tag := typ.Field(i).Tag.Get("reload"); tag != "" && tag != "true" {
			t.Errorf("Config.%s: reload:%q, want \"true\" or no tag", typ.Field(i).Name, tag)
		}
		if Reloadable(typ.Field(i)) {
			got = append(got, name)
		}
	}
	want := "slaves max-pipeline read-policy read-your-writes read-consistency ryw-wait max-lag-messages max-lag-ms weights " +
		"health-interval requirepass users max-clients idle-timeout health-failures proto-max-bulk-len max-args " +
		"client-query-buffer-limit client-output-timeout tls-handshake-timeout shutdown-grace log-level log-format"
	if strings.Join(got, " ") != want {
		t.Errorf("reloadable settings:\n%s\nwant\n%s", strings.Join(got, " "), want)
	}
}
