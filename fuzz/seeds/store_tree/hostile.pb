
I
zD
@8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99
+
a/b
xyzÿÿÿÿÿÿÿÿÿ 2
	
uid-1ÿ?J
..D
@8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99
.../../..