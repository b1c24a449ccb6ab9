
ƒ
consoleB
@af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f326224

gid5

strata.devicechar 5:1

uid0€
g
fifoB
@af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f32622

strata.devicefifo 0:0