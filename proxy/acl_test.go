package proxy

import "testing"

// Without requirepass the default user has no password, as in Redis.
func TestACLUsersNoPassword(t *testing.T) {
	users := (&Config{Users: []User{{Name: "a", Password: "p", Access: AccessReadOnly}}}).aclUsers()
	if len(users) != 2 || users[0].name != "a" || users[1].line() != "user default on nopass ~* &* +@all" {
		t.Fatalf("%+v", users)
	}
	if got := string(users[1].getUser()); got != "*12\r\n$5\r\nflags\r\n*2\r\n$2\r\non\r\n$6\r\nnopass\r\n"+
		"$9\r\npasswords\r\n*0\r\n$8\r\ncommands\r\n$5\r\n+@all\r\n$4\r\nkeys\r\n$2\r\n~*\r\n"+
		"$8\r\nchannels\r\n$2\r\n&*\r\n$9\r\nselectors\r\n*0\r\n" {
		t.Fatalf("GETUSER default: %q", got)
	}
}
