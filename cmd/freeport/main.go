// Command freeport prints a TCP port that is free on the loopback interface
// (never Redis's 6379), for scripts that need to start a server on one.
package main

import (
	"fmt"
	"log"
	"net"
)

func main() {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatalf("freeport: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port != 6379 {
			fmt.Println(port)
			return
		}
	}
}
