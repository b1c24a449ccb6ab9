
P
app.confD
@8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99.
link../bin/tool"

gid0

uid0ÿ