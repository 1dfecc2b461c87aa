blkimg: Could not open 't2.qcow2': No such file or directory
