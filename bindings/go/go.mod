module libztee.dev/ztee

go 1.19
